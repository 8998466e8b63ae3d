"""Legs: the movements a settlement makes on one chain, and their field encoding.

Each chain has an append-only order log of legs, committed by a Poseidon hash chain:

    head_0     = genesis_head(chain_id) = poseidon([GENESIS_DOMAIN, chain_id])
    head_{i+1} = chain_head(head_i, leg_i) = poseidon([head_i, packed, amount_word, order_ref])

Encoding of a leg (three field elements, all far below r, so the map is injective):

    packed      = account | kind << 160 | token << 168      (< 2^200)
    amount_word = amount | min_amount << 96                 (< 2^192)
    order_ref   = the order's id as a field element (e.g. its EIP-712 hash mod r)

`account` is the 160-bit address the leg moves funds from or to (trader, recipient,
maker or pool), `token` a small index into the chain's asset list (the settlement
contract maps it to the ERC-20), amounts are in the token's base units on this chain.
`min_amount` is the order's minimum for a PAYOUT (its `minBuyAmount` on this chain) and
0 for every other kind; the proof checks amount >= min_amount for all legs, which is
vacuous when the minimum is 0.

`packed` and `amount_word` are also exactly the two words per leg that the settlement
contract receives and executes (see `batch.rlc_challenge`); `order_ref` only enters
the hash chain, so receipts can name the order a leg belongs to.

The genesis head depends on the chain id, so two chains' logs never share a head. This
module is pure (no web3): receipts and the API use it as is.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import IntEnum

from settlement.zk.constants import SCALAR_FIELD
from settlement.zk.poseidon import poseidon

__all__ = [
    "ACCOUNT_BITS",
    "AMOUNT_BITS",
    "GENESIS_DOMAIN",
    "KIND_SHIFT",
    "LEAF_INPUTS",
    "MIN_AMOUNT_SHIFT",
    "TOKEN_BITS",
    "TOKEN_SHIFT",
    "Leg",
    "LegKind",
    "chain_head",
    "decode_words",
    "fold_heads",
    "genesis_head",
    "leaf",
    "order_ref_from_hash",
]

ACCOUNT_BITS = 160
KIND_BITS = 8
TOKEN_BITS = 32
AMOUNT_BITS = 96
KIND_SHIFT = ACCOUNT_BITS
TOKEN_SHIFT = KIND_SHIFT + KIND_BITS
MIN_AMOUNT_SHIFT = AMOUNT_BITS
# Domain tag of the genesis head: the ASCII bytes of "crossbook/order-log/v1" as an integer.
GENESIS_DOMAIN = int.from_bytes(b"crossbook/order-log/v1", "big")


class LegKind(IntEnum):
    """What the settlement contract does with a leg. 0 is never a valid kind."""

    PULL = 1  # trader -> vault (authorised by the trader's signed order)
    PAYOUT = 2  # vault -> recipient, at least min_amount
    MAKER_IN = 3  # market maker -> vault
    MAKER_OUT = 4  # vault -> market maker
    POOL = 5  # vault <-> on-chain pool (netted per pool per batch)


@dataclass(frozen=True, slots=True)
class Leg:
    kind: LegKind
    account: int  # 160-bit address as an integer
    token: int  # index into the chain's asset list, < 2^32
    amount: int  # base units, < 2^96
    min_amount: int = 0  # base units, < 2^96; 0 unless kind is PAYOUT
    order_ref: int = 0  # field element identifying the order

    def __post_init__(self) -> None:
        # Ranges only: amount >= min_amount is what the proof checks, so an unprovable
        # leg can still be represented (and rejected by the batch builder).
        if not isinstance(self.kind, LegKind):
            object.__setattr__(self, "kind", LegKind(self.kind))
        _check("account", self.account, ACCOUNT_BITS)
        _check("token", self.token, TOKEN_BITS)
        _check("amount", self.amount, AMOUNT_BITS)
        _check("min_amount", self.min_amount, AMOUNT_BITS)
        if not 0 <= self.order_ref < SCALAR_FIELD:
            raise ValueError("order_ref must be a field element (0 <= x < r)")

    @property
    def packed(self) -> int:
        return self.account | int(self.kind) << KIND_SHIFT | self.token << TOKEN_SHIFT

    @property
    def amount_word(self) -> int:
        return self.amount | self.min_amount << MIN_AMOUNT_SHIFT

    @property
    def words(self) -> tuple[int, int]:
        """The two words the settlement contract receives for this leg."""
        return self.packed, self.amount_word


def _check(name: str, v: int, bits: int) -> None:
    if not isinstance(v, int) or not 0 <= v < 1 << bits:
        raise ValueError(f"{name} must be an integer in [0, 2^{bits}), got {v!r}")


LEAF_INPUTS = 3  # field elements per leaf: len(leaf(leg))


def leaf(leg: Leg) -> tuple[int, int, int]:
    """The field elements a leg contributes to the hash chain: (packed, amount_word, order_ref)."""
    return leg.packed, leg.amount_word, leg.order_ref


def chain_head(prev_head: int, leg: Leg) -> int:
    """One step of the order-log hash chain."""
    return poseidon([prev_head, *leaf(leg)])


def fold_heads(head: int, legs: Iterable[Leg]) -> int:
    """The head after appending `legs` to a log whose head is `head`."""
    for leg in legs:
        head = chain_head(head, leg)
    return head


def genesis_head(chain_id: int) -> int:
    """Head of chain `chain_id`'s empty log (the settlement contract's initial cursor)."""
    if not 0 < chain_id < 1 << 64:
        raise ValueError(f"chain id out of range: {chain_id}")
    return poseidon([GENESIS_DOMAIN, chain_id])


def order_ref_from_hash(order_hash: bytes) -> int:
    """An order's 32-byte hash (e.g. its EIP-712 digest) as a field element."""
    if len(order_hash) != 32:
        raise ValueError("order hash must be 32 bytes")
    return int.from_bytes(order_hash, "big") % SCALAR_FIELD


def decode_words(packed: int, amount_word: int, order_ref: int = 0) -> Leg:
    """Inverse of `Leg.words` for canonical words (what the contract's decoding does)."""
    if packed >> (TOKEN_SHIFT + TOKEN_BITS) or amount_word >> (2 * AMOUNT_BITS):
        raise ValueError("non-canonical leg words (high bits set)")
    return Leg(
        kind=LegKind((packed >> KIND_SHIFT) & ((1 << KIND_BITS) - 1)),
        account=packed & ((1 << ACCOUNT_BITS) - 1),
        token=packed >> TOKEN_SHIFT,
        amount=amount_word & ((1 << AMOUNT_BITS) - 1),
        min_amount=amount_word >> MIN_AMOUNT_SHIFT,
        order_ref=order_ref,
    )
