"""Orders: the trader's EIP-712 signed intent, its checks against a quote, and the legs it
puts into the chains' order logs.

The `Order` struct is the one the Settlement vault checks on chain before pulling funds,
so its fields, their order and the domain (name "Crossbook", version "1", the sell
chain's id and vault) must never drift from the contract's. An order confirmed here
becomes a PULL leg on the sell chain's log at once; its PAYOUT leg enters the buy chain's
log when the pull has settled (or at once in the fast tier), so a payout never precedes
the funds that back it. A maker whose level or firm quote the order filled settles with a
MAKER_IN (what it sold, maker -> vault) once the pull has settled, and a MAKER_OUT (what it
bought, vault -> maker) once its MAKER_IN has succeeded; netted pool trades are POOL legs,
which belong to no order (order_ref 0).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from app.domain.eip712 import Domain, StructType, typed_digest
from settlement.zk.legs import Leg, LegKind, order_ref_from_hash

__all__ = [
    "ORDER_TYPE",
    "TERMINAL_STATES",
    "Order",
    "OrderMismatch",
    "OrderState",
    "check_against_quote",
    "maker_in_leg",
    "maker_out_leg",
    "payout_leg",
    "pool_leg",
    "pull_leg",
]

ORDER_TYPE = StructType(
    "Order",
    (
        ("address", "trader"),
        ("uint256", "sellChainId"),
        ("address", "sellToken"),
        ("uint256", "sellAmount"),
        ("uint256", "buyChainId"),
        ("address", "buyToken"),
        ("uint256", "minBuyAmount"),
        ("address", "recipient"),
        ("uint256", "nonce"),
        ("uint256", "deadline"),
        ("bytes32", "quoteId"),
    ),
)


class OrderState(StrEnum):
    CONFIRMED = "confirmed"
    PULL_SETTLED = "pull_settled"
    SETTLED = "settled"
    FINALIZED = "finalized"
    FAILED = "failed"
    REFUNDED = "refunded"


TERMINAL_STATES = frozenset({OrderState.FINALIZED, OrderState.FAILED, OrderState.REFUNDED})


class OrderMismatch(ValueError):
    """The order does not match its quote; `field` names the first difference."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True, slots=True)
class Order:
    trader: str
    sell_chain_id: int
    sell_token: str
    sell_amount: int
    buy_chain_id: int
    buy_token: str
    min_buy_amount: int
    recipient: str
    nonce: int
    deadline: int
    quote_id: str

    def values(self) -> dict[str, Any]:
        return {
            "trader": self.trader,
            "sellChainId": self.sell_chain_id,
            "sellToken": self.sell_token,
            "sellAmount": self.sell_amount,
            "buyChainId": self.buy_chain_id,
            "buyToken": self.buy_token,
            "minBuyAmount": self.min_buy_amount,
            "recipient": self.recipient,
            "nonce": self.nonce,
            "deadline": self.deadline,
            "quoteId": self.quote_id,
        }

    def to_json(self) -> dict[str, Any]:
        # uint256 amounts and the nonce travel as decimal strings; ids and times as numbers.
        as_str = ("sellAmount", "minBuyAmount", "nonce")
        return {k: (str(v) if k in as_str else v) for k, v in self.values().items()}

    def digest(self, domain: Domain) -> bytes:
        return typed_digest(domain, ORDER_TYPE, self.values())


def _same(a: str, b: str) -> bool:
    return a.lower() == b.lower()


def check_against_quote(order: Order, quote: dict[str, Any]) -> None:
    """The order must take the quote as offered: same taker, assets, chains, recipient and
    sell amount, and ask no more than the quoted buy amount, no less than its minimum."""
    checks: list[tuple[str, bool]] = [
        ("trader", _same(order.trader, quote["taker"])),
        ("sellChainId", order.sell_chain_id == quote["sellChainId"]),
        ("sellToken", _same(order.sell_token, quote["sellToken"])),
        ("sellAmount", order.sell_amount == int(quote["sellAmount"])),
        ("buyChainId", order.buy_chain_id == quote["buyChainId"]),
        ("buyToken", _same(order.buy_token, quote["buyToken"])),
        ("recipient", _same(order.recipient, quote["recipient"])),
        (
            "minBuyAmount",
            int(quote["minBuyAmount"]) <= order.min_buy_amount <= int(quote["buyAmount"]),
        ),
    ]
    for name, ok in checks:
        if not ok:
            raise OrderMismatch(name, f"order.{name} does not match the quote")


def pull_leg(order: Order, token_index: int, order_hash: bytes) -> Leg:
    return Leg(
        kind=LegKind.PULL,
        account=int(order.trader, 16),
        token=token_index,
        amount=order.sell_amount,
        min_amount=0,
        order_ref=order_ref_from_hash(order_hash),
    )


def payout_leg(order: Order, token_index: int, order_hash: bytes, amount: int) -> Leg:
    return Leg(
        kind=LegKind.PAYOUT,
        account=int(order.recipient, 16),
        token=token_index,
        amount=amount,
        min_amount=order.min_buy_amount,
        order_ref=order_ref_from_hash(order_hash),
    )


def maker_in_leg(maker: str, token_index: int, amount: int, order_hash: bytes) -> Leg:
    """The maker delivers what it sold to the order (through its allowance to the vault)."""
    return Leg(LegKind.MAKER_IN, int(maker, 16), token_index, amount, 0, order_ref_from_hash(order_hash))


def maker_out_leg(maker: str, token_index: int, amount: int, order_hash: bytes) -> Leg:
    """The vault pays the maker what it bought from the order."""
    return Leg(LegKind.MAKER_OUT, int(maker, 16), token_index, amount, 0, order_ref_from_hash(order_hash))


def pool_leg(pool: str, token_index: int, amount_in: int) -> Leg:
    """The vault sells `amount_in` of token `token_index` into `pool` (a batch's net trade on
    that pool; the minimum output travels in the settle call's `extra`, not in the leg)."""
    return Leg(LegKind.POOL, int(pool, 16), token_index, amount_in, 0, 0)
