"""Curves: a source in one direction as a function of the marginal price.

The optimal split equalises marginal prices (Angeris et al.): at the optimum every used
source trades up to the same marginal price λ (output per input).  So the router needs,
per source, the inverse of its marginal price: how much input x(λ) and output y(λ) it
takes for the marginal to fall to λ.  We parametrise by u = λ^(-1/2), in which

- a constant-product pool is *exactly* linear in x:  R_in + γ·x = √(γ·R_in·R_out) · u,
  and y = R_out − R_in·R_out / (√k · u), valid for u ≥ u0 = R_in/√k (closed form);
- a StableSwap pool is tabulated once per pool state from its exact integer math
  (output and finite-difference marginal at a geometric grid of inputs), and linearly
  interpolated in u between grid points (the curve is nearly flat, then bends; u keeps
  the interpolation error second order where it matters);
- a market-maker ladder is a staircase: at each level's price, x jumps by the level's
  size.  A jump becomes a piece of relative width 1e-9 in u, so every curve is
  continuous and piecewise of the same two shapes.

All quantities are floats in *canonical* units (18 decimals for every asset), so curves
of one canonical pair on different chains and with different decimals are comparable.
Floats only guide the split; every amount the router returns comes from exact math.
"""

from __future__ import annotations

import heapq
import itertools
import math
from bisect import bisect_right
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

from app.domain.sources import InsufficientLiquidity, LadderSource, Source, SourceKind
from app.domain.types import CANONICAL_DECIMALS, Asset

__all__ = ["Curve", "cached_curve", "curve_for"]

_STEP = 1e-8  # relative u-width of a ladder level's jump
_GRID_POINTS = 40  # initial StableSwap grid, geometric from 1e-6 to 40 × the balance
_GRID_LO, _GRID_HI = 1e-6, 40.0
_REFINE_TOL = 1e-6  # bisect a grid interval while interpolation misses by more
_REFINE_BUDGET = 160  # exact-math probes per table at most


@dataclass(frozen=True, slots=True)
class Curve:
    """x(u), y(u) of one source in one direction (canonical float units).

    Breakpoints `u` ascend; before `u[0]` the source is idle.  With `cp` set, the curve is
    the constant-product closed form `cp = (a, b, c, e)` from `u[0]` on; otherwise it
    interpolates the points linearly and stays flat after the last one (exhausted).
    """

    u: tuple[float, ...]
    x: tuple[float, ...]
    y: tuple[float, ...]
    cp: tuple[float, float, float, float] | None = None

    @property
    def spot(self) -> float:
        """Marginal price (canonical output per input) of the first unit."""
        return 1.0 / (self.u[0] * self.u[0])

    @property
    def x_max(self) -> float:
        return math.inf if self.cp is not None else self.x[-1]

    def at(self, u: float) -> tuple[float, float]:
        """(x, y) traded when the marginal price has fallen to 1/u²."""
        us = self.u
        if u <= us[0]:
            return 0.0, 0.0
        cp = self.cp
        if cp is not None:
            return cp[0] * u + cp[1], cp[2] + cp[3] / u
        j = bisect_right(us, u) - 1
        if j >= len(us) - 1:
            return self.x[-1], self.y[-1]
        t = (u - us[j]) / (us[j + 1] - us[j])
        return self.x[j] + t * (self.x[j + 1] - self.x[j]), self.y[j] + t * (
            self.y[j + 1] - self.y[j]
        )

    def x_at(self, u: float) -> float:
        return self.at(u)[0]

    def u_for_x(self, x: float) -> float:
        """Inverse of x(u) (smallest u reaching x; `inf` beyond capacity)."""
        if x <= 0.0:
            return self.u[0]
        cp = self.cp
        if cp is not None:
            return (x - cp[1]) / cp[0]
        xs = self.x
        j = bisect_right(xs, x) - 1
        if j >= len(xs) - 1:
            return math.inf
        t = (x - xs[j]) / (xs[j + 1] - xs[j])
        return self.u[j] + t * (self.u[j + 1] - self.u[j])

    def dx_du(self, u: float) -> float:
        """Local slope of x(u) (0 where the source is idle or exhausted)."""
        us = self.u
        if u < us[0]:
            return 0.0
        if self.cp is not None:
            return self.cp[0]
        j = bisect_right(us, u) - 1
        if j >= len(us) - 1:
            return 0.0
        return (self.x[j + 1] - self.x[j]) / (us[j + 1] - us[j])

    def jump_at(self, u: float) -> tuple[float, float] | None:
        """(x before, x after) when u falls on a ladder level's jump, else None.

        On a jump x(u) is ill-conditioned (a level's size over a sliver of u), so the
        router settles float residue there explicitly rather than trusting x(u)."""
        if self.cp is not None:
            return None
        us = self.u
        j = bisect_right(us, u) - 1
        if 0 <= j < len(us) - 1 and us[j + 1] - us[j] <= us[j] * 4 * _STEP:
            return self.x[j], self.x[j + 1]
        return None

    def u_for_y(self, y: float) -> float:
        """Inverse of y(u) (smallest u delivering y; `inf` beyond capacity)."""
        if y <= 0.0:
            return self.u[0]
        cp = self.cp
        if cp is not None:
            return cp[3] / (y - cp[2]) if y < cp[2] else math.inf
        ys = self.y
        j = bisect_right(ys, y) - 1
        if j >= len(ys) - 1:
            return math.inf
        t = (y - ys[j]) / (ys[j + 1] - ys[j])
        return self.u[j] + t * (self.u[j + 1] - self.u[j])


def _scale(asset: Asset) -> float:
    return float(10 ** (CANONICAL_DECIMALS - asset.decimals))


def _cp_curve(r_in: float, r_out: float, fee_bps: int) -> Curve:
    gamma = (10_000 - fee_bps) / 10_000
    sk = math.sqrt(gamma * r_in * r_out)
    return Curve(
        (r_in / sk,), (0.0,), (0.0,), (sk / gamma, -r_in / gamma, r_out, -r_in * r_out / sk)
    )


def _table_curve(out: Callable[[int], int], balance_in: int, s_in: float, s_out: float) -> Curve:
    """Tabulate an exact integer swap function: a geometric grid of inputs, refined where
    linear interpolation (of u and of y) would miss the true curve by more than 1e-6."""

    def point(x: int) -> tuple[float, float, float] | None:
        # Marginal from a forward difference, attributed to the middle of the step (no
        # bias); the step is wide enough that integer rounding is noise below 1e-6.
        h = max(x // 10_000, balance_in // 10**6, 1)
        try:
            y, y_h = out(x), out(x + h)
        except InsufficientLiquidity:
            return None
        if y <= 0 or y_h <= y:
            return None
        return (x + h / 2) * s_in, (y + y_h) / 2 * s_out, (y_h - y) / h * s_out / s_in

    first = point(max(balance_in // 10**7, 1))
    if first is None:
        raise InsufficientLiquidity("no output at the smallest size")
    pts = [(0.0, 0.0, first[2])]
    ratio = (_GRID_HI / _GRID_LO) ** (1.0 / (_GRID_POINTS - 1))
    for j in range(_GRID_POINTS):
        p = point(int(balance_in * _GRID_LO * ratio**j))
        if p is None:
            break
        if p[0] > pts[-1][0]:
            pts.append(p)
    # Refine the worst-interpolated interval first (weighted by price relevance), until all are within tolerance or
    # the budget is spent: the StableSwap "cliff" gets the points, the flat part few.
    Pt = tuple[float, float, float]

    def probe(p: Pt, q: Pt) -> tuple[float, Pt] | None:
        r = point(int((p[0] + q[0]) / 2 / s_in))
        if r is None or not p[0] < r[0] < q[0]:
            return None
        t = (r[0] - p[0]) / (q[0] - p[0])
        y_err = abs(p[1] + t * (q[1] - p[1]) - r[1]) / r[1]
        # What misallocation costs: interpolating x(u) puts this source's share off by
        # dx at the true price, which loses about ½·|m'|·dx² of output.
        up, uq, ur = p[2] ** -0.5, q[2] ** -0.5, r[2] ** -0.5
        dx = abs(p[0] + (ur - up) / (uq - up) * (q[0] - p[0]) - r[0]) if uq > up else 0.0
        curvature = (p[2] - q[2]) / (q[0] - p[0])
        loss = 0.5 * curvature * dx * dx / r[1]
        # Weight by how close to the best price the interval trades: the far tail (where
        # the pool is nearly drained) matters only to orders no router would send there.
        return max(y_err, loss * 1e3) * r[2] / pts[0][2], r

    heap: list[tuple[float, int, Pt, Pt, Pt]] = []
    seq = 0
    for p, q in itertools.pairwise(pts):
        got = probe(p, q)
        if got is not None:
            heapq.heappush(heap, (-got[0], seq, p, got[1], q))
            seq += 1
    budget = _REFINE_BUDGET
    while heap and budget > 0 and -heap[0][0] > _REFINE_TOL:
        _, _, p, r, q = heapq.heappop(heap)
        pts.append(r)
        for a, b in ((p, r), (r, q)):
            budget -= 1
            got = probe(a, b)
            if got is not None:
                heapq.heappush(heap, (-got[0], seq, a, got[1], b))
                seq += 1
    table = sorted(pts)
    us, xs, ys = [], [], []
    m_prev = math.inf
    for x, y, m in table:
        # Keep the marginal strictly decreasing: integer rounding may make it wobble.
        m = min(m, m_prev * (1.0 - 1e-12))
        m_prev = m
        us.append(m**-0.5)
        xs.append(x)
        ys.append(y)
    return Curve(tuple(us), tuple(xs), tuple(ys))


def _ladder_curve(src: LadderSource, token_in: str, s_in: float, s_out: float) -> Curve:
    us: list[float] = []
    xs: list[float] = [0.0]
    ys: list[float] = [0.0]
    for f in src.fills(token_in):
        price = f.num / f.den * s_out / s_in
        u = 1.0 / math.sqrt(price)
        if us and u <= us[-1] * (1.0 + 2 * _STEP):
            # Same (or rounding-equal) price as the level before: widen that jump.
            xs[-1] += f.cap_in * s_in
            ys[-1] += f.cap_out * s_out
            continue
        if us:
            us.append(u)
            xs.append(xs[-1])
            ys.append(ys[-1])
        else:
            us.append(u)
        us.append(u * (1.0 + _STEP))
        xs.append(xs[-1] + f.cap_in * s_in)
        ys.append(ys[-1] + f.cap_out * s_out)
    if not us:
        raise InsufficientLiquidity("empty ladder")
    return Curve(tuple(us), tuple(xs), tuple(ys))


def curve_for(src: Source, token_in: Asset, token_out: Asset) -> Curve:
    """The curve of `src` for selling `token_in` (raises if it has no liquidity)."""
    s_in, s_out = _scale(token_in), _scale(token_out)
    kind = src.kind
    if kind is SourceKind.CONSTANT_PRODUCT:
        b0, b1 = src.balance0, src.balance1  # type: ignore[attr-defined]
        r_in, r_out = (b0, b1) if token_in.symbol == src.tokens[0].symbol else (b1, b0)
        if r_in <= 0 or r_out <= 0:
            raise InsufficientLiquidity("empty pool")
        return _cp_curve(r_in * s_in, r_out * s_out, src.fee_bps)  # type: ignore[attr-defined]
    if kind is SourceKind.STABLESWAP:
        b0, b1 = src.balance0, src.balance1  # type: ignore[attr-defined]
        b_in = b0 if token_in.symbol == src.tokens[0].symbol else b1
        sym = token_in.symbol
        return _table_curve(lambda a: src.amount_out(sym, a), b_in, s_in, s_out)
    if isinstance(src, LadderSource):
        return _ladder_curve(src, token_in.symbol, s_in, s_out)
    raise TypeError(f"unknown source kind {kind}")


@lru_cache(maxsize=2048)
def cached_curve(src: Source, token_in: Asset, token_out: Asset) -> Curve:
    """`curve_for`, memoised on the (immutable) source state.

    Sources are frozen values, so a pool that did not change between book versions keeps
    its curve; only sources an update touched are tabulated again.
    """
    return curve_for(src, token_in, token_out)
