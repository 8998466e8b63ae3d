"""Quotes: what the operator offers a taker, and the EIP-712 struct it signs.

A quote fixes both amounts, the minimum the trader accepts after slippage, the book
version and blocks it was priced on, and an expiry. The operator's signature over the
`Quote` struct lets a trader prove what was offered; the swap path checks an order
against the stored quote, never against a number the client sends back.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

from app.domain.eip712 import Domain, StructType, typed_digest

__all__ = ["BPS", "QUOTE_TYPE", "QuoteTerms", "apply_bps_floor", "format_price"]

BPS = 10_000

QUOTE_TYPE = StructType(
    "Quote",
    (
        ("bytes32", "quoteId"),
        ("address", "taker"),
        ("address", "recipient"),
        ("uint256", "sellChainId"),
        ("address", "sellToken"),
        ("uint256", "sellAmount"),
        ("uint256", "buyChainId"),
        ("address", "buyToken"),
        ("uint256", "buyAmount"),
        ("uint256", "minBuyAmount"),
        ("uint256", "expiresAt"),
        ("uint256", "bookVersion"),
    ),
)


def apply_bps_floor(amount: int, bps: int) -> int:
    """`amount` less `bps` basis points, rounded down (never promises a wei too many)."""
    if not 0 <= bps <= BPS:
        raise ValueError(f"bps out of range: {bps}")
    return amount * (BPS - bps) // BPS


def format_price(
    buy_amount: int, buy_decimals: int, sell_amount: int, sell_decimals: int, digits: int = 18
) -> str:
    """Buy per sell in whole units as a decimal string (display only; amounts stay integers)."""
    if sell_amount == 0:
        return "0"
    p = Fraction(buy_amount * 10**sell_decimals, sell_amount * 10**buy_decimals)
    whole, frac = divmod(p.numerator * 10**digits // p.denominator, 10**digits)
    s = f"{whole}.{frac:0{digits}d}".rstrip("0")
    return s[:-1] if s.endswith(".") else s


@dataclass(frozen=True, slots=True)
class QuoteTerms:
    quote_id: str  # 0x + 32 bytes
    taker: str
    recipient: str
    sell_chain_id: int
    sell_token: str
    sell_amount: int
    buy_chain_id: int
    buy_token: str
    buy_amount: int
    min_buy_amount: int
    expires_at: int
    book_version: int

    def values(self) -> dict[str, object]:
        return {
            "quoteId": self.quote_id,
            "taker": self.taker,
            "recipient": self.recipient,
            "sellChainId": self.sell_chain_id,
            "sellToken": self.sell_token,
            "sellAmount": self.sell_amount,
            "buyChainId": self.buy_chain_id,
            "buyToken": self.buy_token,
            "buyAmount": self.buy_amount,
            "minBuyAmount": self.min_buy_amount,
            "expiresAt": self.expires_at,
            "bookVersion": self.book_version,
        }

    def digest(self, domain: Domain) -> bytes:
        return typed_digest(domain, QUOTE_TYPE, self.values())
