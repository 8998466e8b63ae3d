"""A routing plan: everything about one pair that does not depend on the order size.

For a book version and a pair X→Y the plan holds the *members* the order can be split
over — every direct X/Y source on an available chain, and one *composite* per connector
asset C (X→C on all X/C sources, then C→Y on all C/Y sources, each hop itself split
optimally) — their curves, and the merged aggregate of those curves.  Building it is
the expensive part (StableSwap tables, sorting breakpoints); the router caches plans per
book version, so a quote only pays the O(log K) solve and the exact integer math.

A composite's curve comes from its two hops: at hop marginals λ1 and λ2 the path's
marginal is λ1·λ2, so u = u1·u2, and the hop-1 output feeds hop 2.  Sampling hop 1's
input on a geometric grid and solving hop 2 for its output traces the path's x(u), y(u).
Different connectors use disjoint pools (X/C and C/Y), so composites and direct sources
never share liquidity and the top-level split stays a separable convex problem.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from app.domain.book import VirtualBook
from app.domain.routing.aggregate import Aggregate, CapacityExceeded
from app.domain.routing.curves import Curve, cached_curve
from app.domain.routing.result import GasModel
from app.domain.sources import InsufficientLiquidity, LadderSource, Source
from app.domain.types import Asset, AssetSymbol

__all__ = ["Composite", "Direct", "Plan", "Stage", "build_plan", "build_stage"]

_COMPOSITE_POINTS = 48


@dataclass(frozen=True, slots=True, eq=False)
class Direct:
    source: Source
    tin: Asset
    tout: Asset
    curve: Curve
    cap_in: int | None  # native input the source can take at most (ladders)
    cap_out: int | None  # native output it can give at most (None: see the curve)


@dataclass(frozen=True, slots=True, eq=False)
class Stage:
    """One hop: the sources of one pair and their aggregate."""

    members: tuple[Direct, ...]
    agg: Aggregate


@dataclass(frozen=True, slots=True, eq=False)
class Composite:
    via: AssetSymbol
    first: Stage
    second: Stage
    curve: Curve


Member = Direct | Composite


@dataclass(frozen=True, slots=True, eq=False)
class Plan:
    sell: AssetSymbol
    buy: AssetSymbol
    members: tuple[Member, ...]
    agg: Aggregate
    # Gas per use of each direct source (canonical output units); composites sum theirs.
    gas_out: dict[str, float]
    native_price: float | None  # canonical buy units per canonical native unit
    gas_units: dict[str, int]  # per source id, for the route's gas lines
    best: Member  # the member with the best first-unit price (for price impact)
    by_spot: tuple[int, ...]  # member indices, best first-unit price first
    tables: tuple[int, ...]  # direct members whose curve is a table (StableSwap)
    ladders: tuple[int, ...]  # direct members that are market-maker ladders
    # Per-decimals caches filled lazily by the router (members' caps in order units).
    caps: dict[tuple[str, int], list[int | None]]
    spots: dict[tuple[int, int], tuple[int, int]]  # exact best price per (d_in, d_out)


def build_stage(book: VirtualBook, a: str, b: str) -> Stage | None:
    """The sources of a→b on available chains and their aggregate."""
    members = direct_members(book, a, b)
    return Stage(tuple(members), Aggregate.build([m.curve for m in members])) if members else None


def direct_members(book: VirtualBook, a: str, b: str) -> list[Direct]:
    members: list[Direct] = []
    for src in book.sources_for(a, b):
        t0, t1 = src.tokens
        tin, tout = (t0, t1) if t0.symbol == a else (t1, t0)
        try:
            curve = cached_curve(src, tin, tout)
        except InsufficientLiquidity:
            continue
        cap_in = cap_out = None
        if isinstance(src, LadderSource):
            fills = src.fills(tin.symbol)
            cap_in, cap_out = sum(f.cap_in for f in fills), sum(f.cap_out for f in fills)
        members.append(Direct(src, tin, tout, curve, cap_in, cap_out))
    return members


def _composite_curve(first: Stage, second: Stage) -> Curve | None:
    agg1, agg2 = first.agg, second.agg
    # Size the grid on the depth where hop 1's marginal has fallen to ~44 % of its best.
    depth = sum(cv.x_at(agg1.best_u * 1.5) for cv in agg1.curves)
    if not depth > 0.0:
        return None
    us = [agg1.best_u * agg2.best_u]
    xs, ys = [0.0], [0.0]
    lo, hi = depth * 1e-6, depth * 100.0
    ratio = (hi / lo) ** (1.0 / (_COMPOSITE_POINTS - 1))
    for j in range(_COMPOSITE_POINTS):
        x = lo * ratio**j
        try:
            u1 = agg1.solve_in(x)
            c = sum(y for _, y in agg1.allocation(u1))
            u2 = agg2.solve_in(c)
        except CapacityExceeded:
            break
        y = sum(y for _, y in agg2.allocation(u2))
        u = u1 * u2
        if u <= us[-1] or y <= ys[-1] or not math.isfinite(u):
            continue
        us.append(u)
        xs.append(x)
        ys.append(y)
    if len(us) < 2:
        return None
    return Curve(tuple(us), tuple(xs), tuple(ys))


def _native_price(book: VirtualBook, native: str, buy: str) -> float | None:
    if native == buy:
        return 1.0
    best = 0.0
    for src in book.sources_for(native, buy):
        t0, t1 = src.tokens
        tin, tout = (t0, t1) if t0.symbol == native else (t1, t0)
        try:
            best = max(best, cached_curve(src, tin, tout).spot)
        except InsufficientLiquidity:
            continue
    return best or None


def build_plan(
    book: VirtualBook,
    sell: AssetSymbol,
    buy: AssetSymbol,
    connectors: Iterable[str] | None,
    gas: GasModel | None,
) -> Plan | None:
    members: list[Member] = []
    members.extend(direct_members(book, sell, buy))
    vias = book.symbols() if connectors is None else tuple(sorted(set(connectors)))
    for via in vias:
        if via in (sell, buy):
            continue
        first = build_stage(book, sell, via)
        second = build_stage(book, via, buy) if first is not None else None
        if first is None or second is None:
            continue
        curve = _composite_curve(first, second)
        if curve is not None:
            members.append(Composite(AssetSymbol(via), first, second, curve))
    if not members:
        return None
    native_price = None
    gas_out: dict[str, float] = {}
    if gas is not None:
        native_price = _native_price(book, gas.native_asset, buy)
        if native_price is not None:
            for src in book.sources.values():
                wei = gas.gas_price_wei.get(src.chain, 0) * src.gas_units / gas.batch_size
                gas_out[src.id] = wei * native_price
    units: dict[str, int] = {}
    for m in members:
        for d in (m,) if isinstance(m, Direct) else (*m.first.members, *m.second.members):
            units[d.source.id] = d.source.gas_units
    return Plan(
        sell,
        buy,
        tuple(members),
        Aggregate.build([m.curve for m in members]),
        gas_out,
        native_price,
        units,
        min(members, key=lambda m: m.curve.u[0]),
        tuple(sorted(range(len(members)), key=lambda i: (members[i].curve.u[0], i))),
        tuple(
            i
            for i, m in enumerate(members)
            if isinstance(m, Direct) and m.curve.cp is None and m.cap_in is None
        ),
        tuple(i for i, m in enumerate(members) if isinstance(m, Direct) and m.cap_in is not None),
        {},
        {},
    )
