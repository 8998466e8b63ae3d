"""The virtual book: every source on every chain, one immutable snapshot per version.

The book is what the router prices against and what `GET /v1/book` shows:

- every liquidity source (pools and market-maker ladders) on every connected chain,
  indexed by the canonical asset pair it trades; amounts stay in each deployment's base
  units, and comparisons across chains go through the 18-decimal canonical scale;
- the operator's vault inventory per chain and asset, and what confirmed orders have
  already reserved of it (`available_inventory` = balance − reservations);
- which chains are available: a chain marked unavailable (halted, reorging) drops out of
  routing, and its status says why;
- a depth view per pair, per chain and aggregated over available chains: price levels
  (a fixed grid of bps away from the best price) with the cumulative size the sources
  absorb up to each level, on both sides — what `GET /v1/book` shows.

A `VirtualBook` is a frozen value: every update returns a new book whose `version` is one
higher, so a quote is always tied to exactly one version, and caches keyed by version are
never stale.  Reserving applies a route's trades to its sources (a reserved pool or level
is not quoted twice) and holds the payout inventory.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from types import MappingProxyType

from immutables import Map

from app.domain.routing.curves import cached_curve
from app.domain.sources import PRICE_SCALE, InsufficientLiquidity, LadderSource, Source, Trade
from app.domain.types import Asset, AssetPair, AssetSymbol, ChainId

__all__ = [
    "BookError",
    "ChainStatus",
    "Depth",
    "DepthLevel",
    "Hold",
    "InsufficientInventory",
    "Reservation",
    "UnknownAsset",
    "VirtualBook",
]


class BookError(Exception):
    """Root of the book's errors."""


class UnknownAsset(BookError, KeyError):
    """No deployment of that asset is registered on that chain."""


class InsufficientInventory(BookError):
    """A hold asks for more vault inventory than is free."""


@dataclass(frozen=True, slots=True)
class Hold:
    """Vault inventory set aside for a confirmed order's payout."""

    chain: ChainId
    symbol: AssetSymbol
    amount: int


@dataclass(frozen=True, slots=True)
class Reservation:
    id: str
    trades: tuple[Trade, ...] = ()
    holds: tuple[Hold, ...] = ()


@dataclass(frozen=True, slots=True)
class ChainStatus:
    chain: ChainId
    available: bool
    reason: str = ""


@dataclass(frozen=True, slots=True)
class DepthLevel:
    """Up to `price` (quote per base, whole units × 1e18) the sources absorb `base` and
    `quote`, cumulative, in canonical 18-decimal units."""

    price: int
    base: int
    quote: int


@dataclass(frozen=True, slots=True)
class Depth:
    pair: AssetPair
    chain: ChainId | None  # None: aggregated over every available chain
    version: int
    bids: tuple[DepthLevel, ...]  # traders selling base; best (highest) price first
    asks: tuple[DepthLevel, ...]  # traders buying base; best (lowest) price first
    unavailable: tuple[ChainId, ...]  # chains left out because they are unavailable


def _frozen(d: Mapping) -> Mapping:
    return MappingProxyType(dict(d))


def _sum_holds(reservations: Iterable[Reservation]) -> dict[tuple[ChainId, AssetSymbol], int]:
    total: dict[tuple[ChainId, AssetSymbol], int] = {}
    for r in reservations:
        for h in r.holds:
            total[(h.chain, h.symbol)] = total.get((h.chain, h.symbol), 0) + h.amount
    return total


@dataclass(frozen=True, slots=True, eq=False)
class VirtualBook:
    """One version of the whole book.  Build with `VirtualBook()` and the `with_*` updates."""

    version: int = 0
    assets: Mapping[tuple[AssetSymbol, ChainId], Asset] = field(default_factory=dict)
    sources: Mapping[str, Source] = field(default_factory=dict)
    inventory: Mapping[tuple[ChainId, AssetSymbol], int] = field(default_factory=dict)
    # A persistent map: a new version shares it but for the changed entries (thousands of
    # orders are open under load; copying them per confirmation batch would dominate).
    reservations: Mapping[str, Reservation] = field(default_factory=Map)
    chain_status: Mapping[ChainId, ChainStatus] = field(default_factory=dict)
    _by_pair: Mapping[AssetPair, tuple[str, ...]] = field(init=False, repr=False)
    _reserved: Mapping[tuple[ChainId, AssetSymbol], int] = field(init=False, repr=False)
    _next_expiry: int | None = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.reservations, Map):
            object.__setattr__(self, "reservations", Map(self.reservations))
        self._index_sources()
        object.__setattr__(self, "_reserved", _sum_holds(self.reservations.values()))

    def _index_sources(self) -> None:
        by_pair: dict[AssetPair, list[str]] = {}
        for sid in sorted(self.sources):
            t0, t1 = self.sources[sid].tokens
            by_pair.setdefault(AssetPair.of(t0.symbol, t1.symbol), []).append(sid)
        object.__setattr__(self, "_by_pair", {p: tuple(ids) for p, ids in by_pair.items()})
        times = [
            t
            for s in self.sources.values()
            if isinstance(s, LadderSource)
            if (t := s.next_expiry()) is not None
        ]
        object.__setattr__(self, "_next_expiry", min(times) if times else None)

    def _next(
        self, *, bump: bool = True, reserved: Mapping[tuple[ChainId, AssetSymbol], int] | None = None, **changes: object
    ) -> VirtualBook:
        """The next version with `changes`. Derived indexes are carried over unless what
        they derive from changed: a swap's reservation must not cost a pass over every
        source and every other open reservation (thousands, under load)."""
        nxt = object.__new__(VirtualBook)
        for name in _FIELDS:
            object.__setattr__(nxt, name, changes.pop(name) if name in changes else getattr(self, name))
        if changes:
            raise TypeError(f"unknown book fields {sorted(changes)}")
        object.__setattr__(nxt, "version", self.version + 1 if bump else self.version)
        if nxt.sources is self.sources:
            object.__setattr__(nxt, "_by_pair", self._by_pair)
            object.__setattr__(nxt, "_next_expiry", self._next_expiry)
        else:
            nxt._index_sources()
        if reserved is not None:
            object.__setattr__(nxt, "_reserved", reserved)
        elif nxt.reservations is self.reservations:
            object.__setattr__(nxt, "_reserved", self._reserved)
        else:
            object.__setattr__(nxt, "_reserved", _sum_holds(nxt.reservations.values()))
        return nxt

    # -- updates (each returns the next version) ---------------------------------------

    def with_assets(self, *assets: Asset) -> VirtualBook:
        merged = dict(self.assets)
        merged.update({(a.symbol, a.chain): a for a in assets})
        status = dict(self.chain_status)
        for a in assets:
            status.setdefault(a.chain, ChainStatus(a.chain, True))
        return self._next(assets=_frozen(merged), chain_status=_frozen(status))

    def with_sources(self, *sources: Source) -> VirtualBook:
        """Add or replace sources (by id); their tokens are registered as assets."""
        book = self.with_assets(*(t for s in sources for t in s.tokens))
        merged = dict(book.sources)
        merged.update({s.id: s for s in sources})
        return book._next(bump=False, sources=_frozen(merged))

    def without_sources(self, *ids: str) -> VirtualBook:
        return self._next(sources=_frozen({k: v for k, v in self.sources.items() if k not in ids}))

    def with_inventory(self, chain: ChainId, symbol: AssetSymbol, amount: int) -> VirtualBook:
        """Set the vault's balance of `symbol` on `chain` (base units)."""
        self.asset(symbol, chain)
        inv = dict(self.inventory)
        inv[(chain, symbol)] = amount
        return self._next(inventory=_frozen(inv))

    def with_chain_available(
        self, chain: ChainId, available: bool, reason: str = ""
    ) -> VirtualBook:
        status = dict(self.chain_status)
        status[chain] = ChainStatus(chain, available, "" if available else reason)
        return self._next(chain_status=_frozen(status))

    def reserve(
        self, reservation_id: str, trades: Iterable[Trade] = (), holds: Iterable[Hold] = ()
    ) -> VirtualBook:
        """Apply `trades` to their sources and hold payout inventory, atomically."""
        return self._reserve_all([Reservation(reservation_id, tuple(trades), tuple(holds))], strict=True)[0]

    def reserve_many(self, reservations: Iterable[Reservation]) -> tuple[VirtualBook, tuple[Reservation, ...]]:
        """Reserve several in one version, in order. One that no longer fits (its payout
        exceeds the free inventory, or a traded source is gone) is kept without trades or
        holds, and returned: the caller decided on it against an earlier view."""
        return self._reserve_all(list(reservations), strict=False)

    def _reserve_all(self, items: list[Reservation], *, strict: bool) -> tuple[VirtualBook, tuple[Reservation, ...]]:
        assert isinstance(self.reservations, Map)
        res = self.reservations.mutate()
        srcs: dict[str, Source] | None = None
        reserved = dict(self._reserved)
        dropped: list[Reservation] = []
        for r in items:
            if r.id in res:
                raise BookError(f"reservation {r.id} exists")
            try:
                need = _sum_holds([r])
                for (chain, sym), amount in need.items():
                    free = self._free(chain, sym, reserved)
                    if amount > free:
                        raise InsufficientInventory(f"{sym}@{chain}: need {amount}, free {free}")
                if r.trades:
                    staged = dict(self.sources if srcs is None else srcs)
                    for t in r.trades:
                        staged[t.source_id] = staged[t.source_id].apply(t)
                    srcs = staged
            except (InsufficientInventory, KeyError, InsufficientLiquidity):
                if strict:
                    raise
                dropped.append(r)
                r = Reservation(r.id)
                need = {}
            for key, amount in need.items():
                reserved[key] = reserved.get(key, 0) + amount
            res[r.id] = r
        sources = self.sources if srcs is None else _frozen(srcs)
        return self._next(reserved=reserved, reservations=res.finish(), sources=sources), tuple(dropped)

    def _free(self, chain: ChainId, symbol: AssetSymbol, reserved: Mapping[tuple[ChainId, AssetSymbol], int]) -> int:
        if not self.is_available(chain):
            return 0
        return self.inventory.get((chain, symbol), 0) - reserved.get((chain, symbol), 0)

    def release(self, *reservation_ids: str) -> VirtualBook:
        """Free reservations' inventory holds (unknown ids are ignored).

        Source state is not rolled back: pool reserves come back from the chain adapters
        (which see the settled or absent trade), and consumed maker levels stay consumed.
        """
        gone = [self.reservations[i] for i in reservation_ids if i in self.reservations]
        if not gone:
            return self
        assert isinstance(self.reservations, Map)
        res = self.reservations.mutate()
        for r in gone:
            del res[r.id]
        reserved = dict(self._reserved)
        for key, amount in _sum_holds(gone).items():
            reserved[key] -= amount
        return self._next(reservations=res.finish(), reserved=reserved)

    def expire(self, now: int) -> VirtualBook:
        """Drop market-maker levels that expired at or before `now` (same book if none)."""
        nxt = self.next_expiry
        if nxt is None or nxt > now:
            return self
        srcs = {
            k: (v.live(now) if isinstance(v, LadderSource) else v) for k, v in self.sources.items()
        }
        return self._next(sources=_frozen(srcs))

    # -- queries -----------------------------------------------------------------------

    @property
    def chains(self) -> tuple[ChainId, ...]:
        return tuple(sorted(self.chain_status))

    def is_available(self, chain: ChainId) -> bool:
        st = self.chain_status.get(chain)
        return st is not None and st.available

    @property
    def unavailable_chains(self) -> tuple[ChainStatus, ...]:
        return tuple(s for _, s in sorted(self.chain_status.items()) if not s.available)

    def asset(self, symbol: str, chain: ChainId) -> Asset:
        try:
            return self.assets[(AssetSymbol(symbol), chain)]
        except KeyError:
            raise UnknownAsset(f"{symbol} is not deployed on chain {chain}") from None

    def symbols(self) -> tuple[AssetSymbol, ...]:
        return tuple(sorted({s for s, _ in self.assets}))

    def sources_for(self, a: str, b: str) -> tuple[Source, ...]:
        """Sources trading a/b on available chains, in id order (deterministic)."""
        if a == b:
            return ()
        ids = self._by_pair.get(AssetPair.of(a, b), ())
        return tuple(s for s in (self.sources[i] for i in ids) if self.is_available(s.chain))

    def reserved(self, chain: ChainId, symbol: str) -> int:
        return self._reserved.get((chain, AssetSymbol(symbol)), 0)

    def available_inventory(self, chain: ChainId, symbol: str) -> int:
        """Vault balance minus reservations (0 on an unavailable chain)."""
        if not self.is_available(chain):
            return 0
        return self.inventory.get((chain, AssetSymbol(symbol)), 0) - self.reserved(chain, symbol)

    @property
    def next_expiry(self) -> int | None:
        """Earliest expiry among market-maker levels (None without levels)."""
        return self._next_expiry

    def depth(
        self, pair: AssetPair, chain: ChainId | None = None, *, levels: int = 20, step_bps: int = 10
    ) -> Depth:
        """Cumulative depth on a grid of `levels` prices, `step_bps` apart from the best."""
        srcs = [
            s for s in self.sources_for(pair.base, pair.quote) if chain is None or s.chain == chain
        ]
        bids = self._side(srcs, pair.base, pair.quote, levels, step_bps, selling_base=True)
        asks = self._side(srcs, pair.quote, pair.base, levels, step_bps, selling_base=False)
        gone = tuple(
            st.chain for st in self.unavailable_chains if chain is None or st.chain == chain
        )
        return Depth(pair, chain, self.version, bids, asks, gone)

    @staticmethod
    def _side(
        srcs: list[Source], sell: str, buy: str, levels: int, step_bps: int, selling_base: bool
    ) -> tuple[DepthLevel, ...]:
        curves = []
        for src in srcs:
            t0, t1 = src.tokens
            tin, tout = (t0, t1) if t0.symbol == sell else (t1, t0)
            try:
                curves.append(cached_curve(src, tin, tout))
            except InsufficientLiquidity:
                continue
        if not curves:
            return ()
        best = max(cv.spot for cv in curves)  # output per input, canonical
        out = []
        for k in range(1, levels + 1):
            # Bids: price (quote/base) falls k steps; asks: price (= 1/marginal) rises.
            f = 1.0 - k * step_bps / 10_000 if selling_base else 1.0 / (1.0 + k * step_bps / 10_000)
            if f <= 0.0:
                break
            u = 1.0 / (best * f) ** 0.5
            x = sum(cv.at(u)[0] for cv in curves)
            y = sum(cv.at(u)[1] for cv in curves)
            price = best * f if selling_base else 1.0 / (best * f)
            base, quote = (x, y) if selling_base else (y, x)
            out.append(DepthLevel(int(price * PRICE_SCALE), int(base), int(quote)))
        return tuple(out)


# The constructor's fields, which `VirtualBook._next` carries from version to version.
_FIELDS = tuple(f.name for f in fields(VirtualBook) if f.init)
