"""Refining the float split before it becomes integers.

The aggregate solve gives each member a share at a common marginal price from the
members' curves. Two things it cannot see are fixed here: a StableSwap table only
interpolates its pool (`polish`: one Newton step per table member from the exact integer
math, then the common price re-solved), and the float residue of the solve
(`settle`: it goes to a ladder level partly filled at the common price, which trades at
exactly that price).
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable, Sequence

from app.domain.routing.plan import Direct, Plan
from app.domain.sources import InsufficientLiquidity
from app.domain.types import CANONICAL_DECIMALS

__all__ = ["polish", "root_near", "settle"]


def polish(
    plan: Plan, u: float, shares: list[float], excluded: list[int], amount_c: float
) -> list[float]:
    """One Newton step on the tabulated (StableSwap) members, from their exact math.

    A table interpolates the curve; where a pool is nearly flat, a tiny error in price
    is a large error in size.  For each used table member we measure the true marginal
    at its share (one extra exact evaluation), move its share to where the marginal
    equals λ* (using the table's local slope), then re-solve the common price so that
    all members together again take exactly the order.
    """
    tables = [i for i in plan.tables if shares[i] > 0.0]
    if not tables:
        return shares
    fixed: dict[int, float] = {}
    for i in tables:
        m = plan.members[i]
        assert isinstance(m, Direct)
        s_in = float(10 ** (CANONICAL_DECIMALS - m.tin.decimals))
        s_out = float(10 ** (CANONICAL_DECIMALS - m.tout.decimals))
        x = shares[i]
        xn = int(x / s_in)
        h = max(xn // 100_000, 1)
        try:
            y0 = m.source.amount_out(m.tin.symbol, xn)
            y1 = m.source.amount_out(m.tin.symbol, xn + h)
        except InsufficientLiquidity:
            return shares
        if y1 <= y0:
            return shares
        u_true = ((y1 - y0) / h * s_out / s_in) ** -0.5  # at x + h/2
        slope = m.curve.dx_du(u)
        fixed[i] = min(max(x + h * s_in / 2 + (u - u_true) * slope, 0.0), m.curve.x_max)
    # The corrected table shares no longer sum to the order: find the common price u'
    # at which the exact curves plus the tables (moving along their local slopes) take
    # exactly the order.  F(u') is increasing and piecewise linear: safeguarded Newton.
    agg = plan.agg
    out_of_play = [*excluded, *fixed]
    slopes = {i: plan.members[i].curve.dx_du(u) for i in fixed}

    def f(v: float) -> tuple[float, float]:
        total, d = agg.x_total(v)
        for i in out_of_play:
            cv = agg.curves[i]
            total -= cv.at(v)[0]
            d -= cv.dx_du(v)
        for i, x in fixed.items():
            total += x + slopes[i] * (v - u)
            d += slopes[i]
        return total - amount_c, d

    v = root_near(f, agg.u, u)
    out = [0.0 if i in excluded else cv.at(v)[0] for i, cv in enumerate(agg.curves)]
    for i, x in fixed.items():
        out[i] = max(x + slopes[i] * (v - u), 0.0)
    if sum(out) <= 0.0:
        return shares
    return settle(plan, v, out, [*excluded, *fixed], amount_c)


def root_near(f: Callable[[float], tuple[float, float]], us: list[float], u: float) -> float:
    """Root of an increasing, piecewise linear f whose kinks lie on `us`, near u.

    Gallop from u over the kinks until f changes sign, bisect the kinks in between,
    then solve the one linear interval: a handful of evaluations."""

    def g(v: float) -> float:
        return f(v)[0]

    def linear(a: float, fa: float, b: float, fb: float) -> float:
        return a if fb <= fa else a + (b - a) * (-fa) / (fb - fa)

    n = len(us)
    k = max(bisect_right(us, u) - 1, 0)
    fu = g(u)
    if fu == 0.0:
        return u
    if fu > 0.0:
        # Largest kink index lo ≤ k with g(us[lo]) ≤ 0; hi is the kink above it.
        hi, step = -1, 1
        lo = k
        while lo >= 0 and us[lo] <= u and g(us[lo]) > 0.0:
            hi = lo
            lo = k - step
            step *= 2
        lo = max(lo, -1)
        if hi < 0:  # g(us[k]) ≤ 0 < g(u): the root is in [us[k], u]
            return linear(us[k], g(us[k]), u, fu) if us[k] < u else u
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if g(us[mid]) > 0.0:
                hi = mid
            else:
                lo = mid
        if lo < 0:
            return us[0]
        return linear(us[lo], g(us[lo]), us[hi], g(us[hi]))
    # Smallest kink index hi > k with g(us[hi]) ≥ 0; lo is the kink below it (or u).
    lo, step = -1, 1
    hi = k + 1
    while hi < n and g(us[hi]) < 0.0:
        lo = hi
        hi = k + 1 + step
        step *= 2
    if hi >= n:
        if lo < 0 or g(us[n - 1]) < 0.0:
            # Beyond the last kink g is linear: one Newton step from there.
            a = max(us[n - 1], u)
            fa, da = f(a)
            return a - fa / da if da > 0.0 else a
        hi = n - 1
    if lo < 0:  # g(u) < 0 ≤ g(us[k+1])
        return linear(u, fu, us[hi], g(us[hi]))
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if g(us[mid]) < 0.0:
            lo = mid
        else:
            hi = mid
    return linear(us[lo], g(us[lo]), us[hi], g(us[hi]))


def settle(
    plan: Plan, u: float, shares: list[float], excluded: Sequence[int], amount_c: float
) -> list[float]:
    """Give the float residue (order − Σ shares) to a ladder whose level is partly filled
    at u: that level trades at exactly λ*, so it is where the residue belongs."""
    rest = amount_c - sum(shares)
    if rest == 0.0:
        return shares
    for i in plan.ladders:
        if i in excluded or (shares[i] <= 0.0 and rest < 0.0):
            continue
        jump = plan.agg.curves[i].jump_at(u)
        if jump is None:
            continue
        new = min(max(shares[i] + rest, jump[0]), jump[1])
        rest -= new - shares[i]
        shares[i] = new
        if rest == 0.0:
            break
    return shares
