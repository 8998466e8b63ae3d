"""Identity types shared by the whole domain: chains, addresses, assets and pairs.

An *asset* is canonical (USDC, WETH, …) and has one ERC-20 deployment per chain;
decimals may differ per chain, so an `Asset` is always the pair (symbol, chain)
together with that deployment's address and decimals.  Amounts everywhere are ints in
the base units of one such deployment; `to_canonical`/`from_canonical` move them to
and from the 18-decimal canonical scale the book uses to compare chains.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NewType

__all__ = [
    "CANONICAL_DECIMALS",
    "Address",
    "Asset",
    "AssetPair",
    "AssetSymbol",
    "ChainId",
    "convert_amount",
]

ChainId = NewType("ChainId", int)
Address = NewType("Address", str)
AssetSymbol = NewType("AssetSymbol", str)

# Every deployment we list has at most 18 decimals, so scaling up to 18 is exact.
CANONICAL_DECIMALS = 18


def convert_amount(amount: int, from_decimals: int, to_decimals: int) -> int:
    """Rescale base units between decimal scales, rounding down (dust stays behind)."""
    if to_decimals >= from_decimals:
        return amount * 10 ** (to_decimals - from_decimals)
    return amount // 10 ** (from_decimals - to_decimals)


@dataclass(frozen=True, slots=True, order=True)
class Asset:
    """One deployment of a canonical asset on one chain."""

    symbol: AssetSymbol
    chain: ChainId
    decimals: int
    address: Address = Address("")

    def __post_init__(self) -> None:
        if not 0 <= self.decimals <= CANONICAL_DECIMALS:
            raise ValueError(f"decimals out of range: {self.decimals}")

    def to_canonical(self, amount: int) -> int:
        """Base units of this deployment → canonical 18-decimal units (exact)."""
        return amount * 10 ** (CANONICAL_DECIMALS - self.decimals)

    def from_canonical(self, amount: int) -> int:
        """Canonical units → base units of this deployment, rounding down."""
        return amount // 10 ** (CANONICAL_DECIMALS - self.decimals)

    def __str__(self) -> str:
        return f"{self.symbol}@{self.chain}"


@dataclass(frozen=True, slots=True, order=True)
class AssetPair:
    """An unordered-by-meaning but canonically ordered pair: `base`/`quote`.

    Prices in depth views are quoted as `quote` per `base`.
    """

    base: AssetSymbol
    quote: AssetSymbol

    def __post_init__(self) -> None:
        if self.base == self.quote:
            raise ValueError("a pair needs two distinct assets")

    @classmethod
    def of(cls, a: str, b: str) -> AssetPair:
        """The canonical pair for two symbols (sorted, so `of(a, b) == of(b, a)`)."""
        lo, hi = sorted((a, b))
        return cls(AssetSymbol(lo), AssetSymbol(hi))

    def other(self, symbol: str) -> AssetSymbol:
        if symbol == self.base:
            return self.quote
        if symbol == self.quote:
            return self.base
        raise KeyError(symbol)

    def __str__(self) -> str:
        return f"{self.base}/{self.quote}"
