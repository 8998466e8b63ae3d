"""The router: split one order over the whole virtual book, optimally and exactly.

**Economics of a cross-chain order.**  The trader sells asset X on chain A and receives
asset Y on chain B.  The trader's X is pulled on chain A into the operator's vault; the
operator pays Y on chain B *from its own inventory*.  The pool and maker trades that the
route lists are the operator's rebalancing — they can run on any chain's sources (and
are netted per batch by the settlement), so the *price* of the order is formed by the
whole book for the pair across all available chains, while the *binding limit* is the
vault's free inventory of Y on chain B (balance minus reservations).  Intermediate
connector amounts on a multi-hop path are likewise the operator's, netted per batch.
Chains marked unavailable contribute no sources, and an order whose sell or buy chain
is unavailable is refused.

**Optimality.**  Maximising Σ outᵢ(xᵢ) subject to Σ xᵢ = X over concave source curves
is a convex problem whose optimum equalises marginal prices (Angeris et al., "Optimal
Routing for Constant Function Market Makers").  Every source's inverse marginal curve
is precomputed per book version (`routing.curves`: closed form for constant product,
tabulated from the exact integer math for StableSwap, staircase for ladders) and merged
(`routing.aggregate`), so an order solves for the common marginal in O(log K).  Members
are direct sources and, per connector asset C, the two-hop path X→C→Y, itself split
optimally on each hop.  Tabulated (StableSwap) shares then get one Newton step from
their exact integer math (true marginal by finite difference) and the common price is
re-solved; float residue lands on a partly filled ladder level, which trades at exactly
λ*.  The float solution is turned into integer amounts that sum exactly to the order
(whole native units per leg, so no leg drops sub-unit dust across decimals), and every
output comes from each source's exact integer math (`routing.execute`); the result is
never worse than the best single member.

**Gas.**  Each source costs its gas units, amortised over the settlement batch size and
priced in the output asset (gas price per chain × price of the native asset in the
book).  A member whose surplus over the marginal price (yᵢ − λ·xᵢ, a lower bound on what
it adds) is below its gas is dropped — the worst first — and the split re-solved, until
every used member pays for itself.

**Determinism.**  Members are ordered by source id and connector symbol, sorts are
stable and integer ties break to the lower index: the same book version and order give
the same route.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Collection, Iterable, Sequence
from fractions import Fraction

from app.domain.book import VirtualBook
from app.domain.routing.aggregate import CapacityExceeded
from app.domain.routing.execute import (
    composite_in,
    composite_out,
    direct_in,
    direct_out,
    grain,
    in_cap,
    integer_split,
    out_cap,
)
from app.domain.routing.plan import Composite, Direct, Plan, build_plan
from app.domain.routing.polish import polish, settle
from app.domain.routing.result import (
    ChainUnavailable,
    GasLine,
    GasModel,
    InventoryExceeded,
    Leg,
    NoRoute,
    Route,
    RoutingError,
    Side,
    Split,
)
from app.domain.sources import InsufficientLiquidity
from app.domain.types import CANONICAL_DECIMALS, Asset, AssetSymbol, ChainId

__all__ = [
    "ChainUnavailable",
    "GasLine",
    "GasModel",
    "InventoryExceeded",
    "Leg",
    "NoRoute",
    "Route",
    "Router",
    "RoutingError",
    "Side",
    "Split",
]

_Member = Direct | Composite


class Router:
    """Quotes exact-in and exact-out routes against a `VirtualBook`.

    `connectors`: assets a two-hop path may go through (None: every asset in the book;
    empty: direct only).  `gas`: gas pricing (default: unpriced, nothing dropped).
    Plans are cached per (book, version, pair); a Router is not thread-safe.
    """

    def __init__(
        self,
        *,
        connectors: Iterable[str] | None = None,
        gas: GasModel | None = None,
        cache_size: int = 64,
    ) -> None:
        self.connectors = None if connectors is None else tuple(sorted(set(connectors)))
        self.gas = gas or GasModel()
        self._cache_size = cache_size
        self._plans: OrderedDict[tuple[int, int, str, str], tuple[VirtualBook, Plan | None]] = (
            OrderedDict()
        )
        self._expired: dict[tuple[int, int], tuple[VirtualBook, VirtualBook]] = {}

    # -- public entry points -------------------------------------------------------------

    def route_exact_in(
        self,
        book: VirtualBook,
        sell: Asset,
        buy: Asset,
        amount_in: int,
        *,
        now: int | None = None,
        exclude_sources: Collection[str] = (),
        max_sources: int | None = None,
    ) -> Route:
        """Sell exactly `amount_in` of `sell` (base units on its chain) for the most `buy`.

        `now` (unix seconds) drops expired maker levels; `exclude_sources` (source ids)
        are not used — a connector path through one of them is dropped whole;
        `max_sources` caps the number of sources the route trades on.  Both reuse the
        cached plan (no rebuild).
        """
        book, plan = self._setup(book, sell, buy, amount_in, now)
        d_a, d_b = sell.decimals, buy.decimals
        amount_c = amount_in * float(10 ** (CANONICAL_DECIMALS - d_a))
        try:
            excluded = self._solve(
                plan, amount_c, Side.EXACT_IN, _excluded(plan, exclude_sources), max_sources
            )
            u = plan.agg.solve_in(amount_c, excluded)
            shares = [x for x, _ in plan.agg.allocation(u, excluded)]
            shares = settle(plan, u, shares, excluded, amount_c)
            shares = _or_best(polish(plan, u, shares, excluded, amount_c), plan, excluded)
            ints = integer_split(
                amount_in, shares, _caps(plan, "in", d_a), _grains(plan, "in", d_a)
            )
            splits = [
                self._split_in(m, q, d_a, d_b) for m, q in zip(plan.members, ints, strict=True) if q
            ]
            split_c = sum(sp.amount_out for sp in splits) * float(10 ** (CANONICAL_DECIMALS - d_b))
            best = self._best_single_in(plan, amount_in, amount_c, d_a, d_b, excluded, split_c)
        except (CapacityExceeded, InsufficientLiquidity, ValueError) as exc:
            raise NoRoute(f"cannot route {amount_in} {sell.symbol}: {exc}") from exc
        route = self._route(Side.EXACT_IN, book, plan, sell, buy, amount_in, splits)
        if best is not None and len(splits) > 1 and best.amount_out > route.net_out:
            alt = self._route(Side.EXACT_IN, book, plan, sell, buy, amount_in, [best])
            if alt.net_out > route.net_out:
                route = alt
        free = book.available_inventory(buy.chain, buy.symbol)
        if route.amount_out > free:
            raise InventoryExceeded(
                f"payout {route.amount_out} {buy} exceeds free inventory {free}"
            )
        return route

    def route_exact_out(
        self,
        book: VirtualBook,
        sell: Asset,
        buy: Asset,
        amount_out: int,
        *,
        now: int | None = None,
        exclude_sources: Collection[str] = (),
        max_sources: int | None = None,
    ) -> Route:
        """Receive at least `amount_out` of `buy` for the least `sell` (options as exact-in)."""
        book, plan = self._setup(book, sell, buy, amount_out, now)
        free = book.available_inventory(buy.chain, buy.symbol)
        if amount_out > free:
            raise InventoryExceeded(f"payout {amount_out} {buy} exceeds free inventory {free}")
        d_a, d_b = sell.decimals, buy.decimals
        want_c = amount_out * float(10 ** (CANONICAL_DECIMALS - d_b))
        try:
            excluded = self._solve(
                plan, want_c, Side.EXACT_OUT, _excluded(plan, exclude_sources), max_sources
            )
            u = plan.agg.solve_out(want_c, excluded)
            shares = _or_best([y for _, y in plan.agg.allocation(u, excluded)], plan, excluded)
            ints = integer_split(
                amount_out, shares, _caps(plan, "out", d_b), _grains(plan, "out", d_b)
            )
            splits = [
                self._split_out(m, q, d_b, d_a)
                for m, q in zip(plan.members, ints, strict=True)
                if q
            ]
            best = self._best_single_out(plan, amount_out, want_c, d_a, d_b, excluded)
        except (CapacityExceeded, InsufficientLiquidity, ValueError) as exc:
            raise NoRoute(f"cannot deliver {amount_out} {buy.symbol}: {exc}") from exc
        route = self._route(
            Side.EXACT_OUT, book, plan, sell, buy, sum(s.amount_in for s in splits), splits
        )
        if best is not None and len(splits) > 1:
            alt = self._route(Side.EXACT_OUT, book, plan, sell, buy, best.amount_in, [best])
            if alt.amount_in + _gas_in(alt) < route.amount_in + _gas_in(route):
                route = alt
        return route

    def plan(self, book: VirtualBook, sell: AssetSymbol, buy: AssetSymbol) -> Plan | None:
        """The cached per-version plan for a pair (built on first use)."""
        key = (id(book), book.version, sell, buy)
        hit = self._plans.get(key)
        if hit is not None and hit[0] is book:
            self._plans.move_to_end(key)
            return hit[1]
        plan = build_plan(book, sell, buy, self.connectors, self.gas)
        # Holding the book in the entry keeps its id from being reused while cached.
        self._plans[key] = (book, plan)
        while len(self._plans) > self._cache_size:
            self._plans.popitem(last=False)
        return plan

    # -- steps ---------------------------------------------------------------------------

    def _setup(
        self, book: VirtualBook, sell: Asset, buy: Asset, amount: int, now: int | None
    ) -> tuple[VirtualBook, Plan]:
        if amount <= 0:
            raise ValueError(f"amount must be positive, got {amount}")
        for chain in (sell.chain, buy.chain):
            if not book.is_available(chain):
                raise ChainUnavailable(f"chain {chain} is unavailable")
        if sell.symbol == buy.symbol:
            raise NoRoute("selling and buying the same asset is a bridge, not a swap")
        if now is not None:
            book = self._live(book, now)
        plan = self.plan(book, sell.symbol, buy.symbol)
        if plan is None:
            raise NoRoute(f"no source for {sell.symbol}/{buy.symbol} on any available chain")
        return book, plan

    def _live(self, book: VirtualBook, now: int) -> VirtualBook:
        nxt = book.next_expiry
        if nxt is None or nxt > now:
            return book
        key = (id(book), book.version)
        hit = self._expired.get(key)
        if hit is not None and hit[0] is book:
            live = hit[1]
            if live.next_expiry is None or live.next_expiry > now:
                return live
        live = book.expire(now)
        if len(self._expired) > self._cache_size:
            self._expired.clear()
        self._expired[key] = (book, live)
        return live

    @staticmethod
    def _active_sources(m: _Member, x: float) -> list[Direct]:
        """The sources a member trades on when given input x (canonical)."""
        if isinstance(m, Direct):
            return [m]
        alloc1 = m.first.agg.allocation(m.first.agg.solve_in(x))
        mid = sum(y for _, y in alloc1)
        alloc2 = m.second.agg.allocation(m.second.agg.solve_in(mid))
        return [d for d, (xi, _) in zip(m.first.members, alloc1, strict=True) if xi > 0] + [
            d for d, (xi, _) in zip(m.second.members, alloc2, strict=True) if xi > 0
        ]

    def _solve(
        self,
        plan: Plan,
        amount_c: float,
        side: Side,
        excluded: list[int],
        max_sources: int | None,
    ) -> list[int]:
        """Members to leave out: the caller's, then those that do not pay for their gas
        (worst first, re-solving after each), then the smallest beyond `max_sources`."""
        if len(excluded) >= len(plan.members):
            raise NoRoute("every source for the pair is excluded")
        agg = plan.agg
        priced = bool(plan.gas_out) and any(plan.gas_out.values())
        if not priced and max_sources is None:
            return excluded

        def solve(ex: list[int]) -> float:
            if side is Side.EXACT_IN:
                return agg.solve_in(amount_c, ex)
            return agg.solve_out(amount_c, ex)

        while True:
            u = solve(excluded)
            lam = 1.0 / (u * u)
            alloc = agg.allocation(u, excluded)
            active = [i for i, (x, _) in enumerate(alloc) if x > 0.0]
            # Candidates to drop, most deserving first; the first whose removal leaves a
            # feasible split is dropped.
            candidates: list[int] = []
            if priced and len(active) > 1:
                scores = {}
                for i in active:
                    x, y = alloc[i]
                    gas = sum(
                        plan.gas_out.get(d.source.id, 0.0)
                        for d in self._active_sources(plan.members[i], x)
                    )
                    scores[i] = y - lam * x - gas
                candidates = sorted(
                    (i for i in active if scores[i] < 0.0), key=lambda i: (scores[i], i)
                )
            capped = False
            if not candidates and max_sources is not None and len(active) > 1:
                used = sum(len(self._active_sources(plan.members[i], alloc[i][0])) for i in active)
                if used > max_sources:
                    capped = True
                    candidates = sorted(active, key=lambda i: (alloc[i][1], i))
            for drop in candidates:
                trial = [*excluded, drop]
                try:
                    solve(trial)
                except CapacityExceeded:
                    continue
                excluded = trial
                break
            else:
                if capped:
                    raise NoRoute(f"the order needs more than {max_sources} sources")
                return excluded

    def _split_in(self, m: _Member, q: int, d_a: int, d_b: int) -> Split:
        if isinstance(m, Direct):
            out, leg = direct_in(m, q, d_a, d_b, 0)
            return Split(None, q, out, (leg,) if leg else ())
        out, legs = composite_in(m, q, d_a, d_b)
        return Split(m.via, q, out, tuple(legs))

    def _split_out(self, m: _Member, q: int, d_b: int, d_a: int) -> Split:
        if isinstance(m, Direct):
            i, o, leg = direct_out(m, q, d_b, d_a, 0)
            return Split(None, i, o, (leg,) if leg else ())
        i, o, legs = composite_out(m, q, d_b, d_a)
        return Split(m.via, i, o, tuple(legs))

    def _best_single_in(
        self,
        plan: Plan,
        amount: int,
        amount_c: float,
        d_a: int,
        d_b: int,
        excluded: list[int],
        split_c: float,
    ) -> Split | None:
        best_i, best_y = -1, -1.0
        for i in plan.by_spot:
            if i in excluded:
                continue
            cv = plan.members[i].curve
            if cv.spot * amount_c <= best_y:
                break  # no later member can beat it: y ≤ spot·x for concave curves
            if amount_c > cv.x_max:
                continue
            y = cv.at(cv.u_for_x(amount_c))[1]
            if y > best_y:
                best_i, best_y = i, y
        if best_i < 0 or best_y < split_c * (1.0 - 1e-4):
            return None  # clearly worse than the split: skip its exact evaluation
        return self._split_in(plan.members[best_i], amount, d_a, d_b)

    def _best_single_out(
        self, plan: Plan, want: int, want_c: float, d_a: int, d_b: int, excluded: list[int]
    ) -> Split | None:
        best_i, best_x = -1, math.inf
        caps = _caps(plan, "out", d_b)
        for i, m in enumerate(plan.members):
            cap = caps[i]
            if i in excluded:
                continue
            if cap is not None and want > cap:
                continue
            u = m.curve.u_for_y(want_c)
            if math.isinf(u):
                continue
            x = m.curve.at(u)[0]
            if x < best_x:
                best_i, best_x = i, x
        if best_i < 0:
            return None
        try:
            return self._split_out(plan.members[best_i], want, d_b, d_a)
        except InsufficientLiquidity:
            return None

    def _route(
        self,
        side: Side,
        book: VirtualBook,
        plan: Plan,
        sell: Asset,
        buy: Asset,
        amount_in: int,
        splits: Sequence[Split],
    ) -> Route:
        amount_out = sum(s.amount_out for s in splits)
        gas = self._gas_lines(plan, buy, [leg for s in splits for leg in s.legs])
        impact = _impact_bps(plan, sell, buy, amount_in, amount_out)
        return Route(
            side, sell, buy, amount_in, amount_out, tuple(splits), gas, impact, book.version
        )

    def _gas_lines(self, plan: Plan, buy: Asset, legs: Sequence[Leg]) -> tuple[GasLine, ...]:
        per_chain: dict[ChainId, int] = {}
        seen: set[str] = set()
        for leg in legs:
            if leg.source_id in seen:
                continue
            seen.add(leg.source_id)
            per_chain[leg.chain] = per_chain.get(leg.chain, 0) + plan.gas_units.get(
                leg.source_id, 0
            )
        lines = []
        batch = max(self.gas.batch_size, 1)
        for chain in sorted(per_chain):
            units = -(-per_chain[chain] // batch)
            cost = 0
            if plan.native_price is not None:
                wei = per_chain[chain] * self.gas.gas_price_wei.get(chain, 0) / batch
                cost = math.ceil(
                    wei * plan.native_price / 10 ** (CANONICAL_DECIMALS - buy.decimals)
                )
            lines.append(GasLine(chain, units, cost))
        return tuple(lines)


def _excluded(plan: Plan, ids: Collection[str]) -> list[int]:
    if not ids:
        return []
    wanted = set(ids)
    out = []
    for i, m in enumerate(plan.members):
        srcs = (m,) if isinstance(m, Direct) else (*m.first.members, *m.second.members)
        if any(d.source.id in wanted for d in srcs):
            out.append(i)
    return out


def _or_best(shares: list[float], plan: Plan, excluded: Sequence[int]) -> list[float]:
    """Orders far below float resolution of the pools' sizes go to the best price."""
    if sum(shares) > 0.0:
        return shares
    best = next(i for i in plan.by_spot if i not in excluded)
    return [1.0 if i == best else 0.0 for i in range(len(shares))]


def _grains(plan: Plan, side: str, decimals: int) -> list[int]:
    key = ("grain-" + side, decimals)
    hit = plan.caps.get(key)
    if hit is None:
        hit = plan.caps[key] = [
            1
            if isinstance(m, Composite)
            else grain(decimals, m.tin.decimals if side == "in" else m.tout.decimals)
            for m in plan.members
        ]
    return hit  # type: ignore[return-value]


def _caps(plan: Plan, side: str, decimals: int) -> list[int | None]:
    key = (side, decimals)
    caps = plan.caps.get(key)
    if caps is None:
        fn = in_cap if side == "in" else out_cap
        caps = plan.caps[key] = [fn(m, decimals) for m in plan.members]
    return caps


def _gas_in(route: Route) -> int:
    """Gas cost of an exact-out route expressed in sell units, at the route's own price."""
    if route.amount_out <= 0:
        return 0
    return route.gas_cost * route.amount_in // route.amount_out


def _spot_canonical(m: _Member) -> Fraction:
    """Exact marginal price of a member's first unit, canonical output per canonical input."""
    if isinstance(m, Direct):
        p = m.source.marginal_price(m.tin.symbol)
        return p * Fraction(10) ** (m.tin.decimals - m.tout.decimals)
    best1 = min(m.first.members, key=lambda d: d.curve.u[0])
    best2 = min(m.second.members, key=lambda d: d.curve.u[0])
    return _spot_canonical(best1) * _spot_canonical(best2)


def _best_spot(plan: Plan, d_a: int, d_b: int) -> tuple[int, int]:
    hit = plan.spots.get((d_a, d_b))
    if hit is None:
        p = _spot_canonical(plan.best) * Fraction(10) ** (d_b - d_a)
        hit = plan.spots[(d_a, d_b)] = (p.numerator, p.denominator)
    return hit


def _impact_bps(plan: Plan, sell: Asset, buy: Asset, amount_in: int, amount_out: int) -> int:
    """1 − (out/in)/p_best in bps, rounded half up, in integers."""
    num, den = _best_spot(plan, sell.decimals, buy.decimals)
    full = amount_in * num  # what the input would buy at the best marginal price, × den
    if full <= 0:
        return 0
    return max((20_000 * (full - amount_out * den) + full) // (2 * full), 0)
