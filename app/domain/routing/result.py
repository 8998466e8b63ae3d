"""What a route is: legs on sources, grouped into splits, with gas and price impact.

A *split* is one path the order's input takes: straight through one source, or through
a connector asset (sell X for the connector on some sources, the connector for Y on
others).  Its `amount_in` is in the order's sell units (the sell asset's decimals on the
sell chain) and its `amount_out` in the payout units (the buy asset on the buy chain);
the splits' `amount_in` sum exactly to the order's.  A *leg* is one fill on one source,
in that source's native base units, with the exact output of the source's integer math.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from app.domain.sources import SourceKind
from app.domain.types import Asset, AssetSymbol, ChainId

__all__ = [
    "ChainUnavailable",
    "GasLine",
    "GasModel",
    "InventoryExceeded",
    "Leg",
    "NoRoute",
    "Route",
    "RoutingError",
    "Side",
    "Split",
]


_WETH = AssetSymbol("WETH")


class RoutingError(Exception):
    """Root of the router's errors (the API maps them to 422/503)."""


class NoRoute(RoutingError):
    """No source trades the pair, or the book cannot absorb the amount."""


class ChainUnavailable(RoutingError):
    """The order's sell or buy chain is marked unavailable in the book."""


class InventoryExceeded(RoutingError):
    """The payout exceeds the vault's free inventory on the buy chain."""


class Side(StrEnum):
    EXACT_IN = "exact_in"
    EXACT_OUT = "exact_out"


@dataclass(frozen=True, slots=True)
class GasModel:
    """How gas turns into output asset: per-chain gas price (wei per unit), the chains'
    native asset (priced in the output asset from the book), and the settlement batch
    size over which a source's per-batch gas is amortised."""

    gas_price_wei: Mapping[ChainId, int] = field(default_factory=dict)
    native_asset: AssetSymbol = _WETH
    batch_size: int = 32


@dataclass(frozen=True, slots=True)
class Leg:
    chain: ChainId
    kind: SourceKind
    source_id: str
    token_in: Asset
    token_out: Asset
    amount_in: int
    amount_out: int
    hop: int  # 0 for the first hop; 1 for a connector's second hop


@dataclass(frozen=True, slots=True)
class Split:
    via: AssetSymbol | None  # connector asset, or None for a direct source
    amount_in: int  # order sell units
    amount_out: int  # payout units
    legs: tuple[Leg, ...]


@dataclass(frozen=True, slots=True)
class GasLine:
    chain: ChainId
    units: int  # amortised over the settlement batch
    cost: int  # in payout units (0 when gas is not priced)


@dataclass(frozen=True, slots=True)
class Route:
    side: Side
    sell: Asset
    buy: Asset
    amount_in: int
    amount_out: int  # gross: the sum of the splits' exact outputs
    splits: tuple[Split, ...]
    gas: tuple[GasLine, ...]
    price_impact_bps: int  # vs the best marginal price in the book
    book_version: int

    @property
    def legs(self) -> tuple[Leg, ...]:
        return tuple(leg for s in self.splits for leg in s.legs)

    @property
    def gas_cost(self) -> int:
        return sum(g.cost for g in self.gas)

    @property
    def net_out(self) -> int:
        """Output after the operator's amortised gas (what a net quote would pay)."""
        return max(self.amount_out - self.gas_cost, 0)
