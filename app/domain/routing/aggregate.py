"""The aggregate of many curves: total input and output as functions of u = λ^(-1/2).

All curves' breakpoints, merged and sorted, cut the u axis into intervals on which every
curve keeps one shape: x is linear in u for all of them, y is linear in u for tables and
ladders and `c + e/u` for constant-product pools.  Per book version we evaluate the
total X and Y at every breakpoint (curve by curve, vectorised — no prefix sums of huge
slopes that would cancel) and the constant-product coefficients per interval.  Solving
"at which marginal price λ* do the sources absorb exactly X" is then a binary search over
breakpoints and a linear interpolation; "…deliver exactly Y" adds a few safeguarded
Newton steps.  Both are O(log K) per order, whatever the number of sources.

Curves can be *excluded* per solve (the gas filter drops members one at a time): the
search subtracts their contributions on the fly instead of rebuilding the merge.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from app.domain.routing.curves import Curve

__all__ = ["Aggregate", "CapacityExceeded"]


class CapacityExceeded(ValueError):
    """The curves together cannot absorb (or deliver) the requested amount."""


@dataclass(frozen=True, slots=True, eq=False)
class Aggregate:
    curves: tuple[Curve, ...]
    u: list[float]  # breakpoints, ascending
    xv: list[float]  # total input at each breakpoint
    yv: list[float]  # total output at each breakpoint
    cp_a: list[float]  # Σ slope dx/du of the constant-product curves active from u[k]
    cp_c: list[float]  # Σ c of those curves (y = c + e/u)
    cp_e: list[float]  # Σ e of those curves

    @classmethod
    def build(cls, curves: Sequence[Curve]) -> Aggregate:
        if not curves:
            raise CapacityExceeded("no curves")
        us = np.unique(np.concatenate([np.asarray(cv.u) for cv in curves]))
        xv = np.zeros_like(us)
        yv = np.zeros_like(us)
        cp_a = np.zeros_like(us)
        cp_c = np.zeros_like(us)
        cp_e = np.zeros_like(us)
        cps = [cv for cv in curves if cv.cp is not None]
        if cps:
            # All constant-product curves at once: a (breakpoints × pools) matrix.
            u0 = np.array([cv.u[0] for cv in cps])
            a, b, c, e = (np.array([cv.cp[i] for cv in cps]) for i in range(4))  # type: ignore[index]
            on = us[:, None] >= u0[None, :]
            uu = us[:, None]
            xv += np.where(on, np.maximum(a * uu + b, 0.0), 0.0).sum(axis=1)
            yv += np.where(on, np.maximum(c + e / uu, 0.0), 0.0).sum(axis=1)
            cp_a += (on * a).sum(axis=1)
            cp_c += (on * c).sum(axis=1)
            cp_e += (on * e).sum(axis=1)
        for cv in curves:
            if cv.cp is None:
                xv += np.interp(us, cv.u, cv.x, left=0.0, right=cv.x[-1])
                yv += np.interp(us, cv.u, cv.y, left=0.0, right=cv.y[-1])
        # Sums of rounded terms may wobble by an ulp; the searches need them ascending.
        xv = np.maximum.accumulate(xv)
        yv = np.maximum.accumulate(yv)
        return cls(
            tuple(curves),
            us.tolist(),
            xv.tolist(),
            yv.tolist(),
            cp_a.tolist(),
            cp_c.tolist(),
            cp_e.tolist(),
        )

    @property
    def best_u(self) -> float:
        return self.u[0]

    # -- helpers -------------------------------------------------------------------------

    def _without(self, k: int, excluded: Sequence[int], use_x: bool) -> float:
        v = self.xv[k] if use_x else self.yv[k]
        uk = self.u[k]
        for i in excluded:
            v -= self.curves[i].at(uk)[0 if use_x else 1]
        return v

    def _last_at_most(self, target: float, excluded: Sequence[int], use_x: bool) -> int:
        """Largest k whose total (minus excluded curves) is ≤ target; −1 if none."""
        if not excluded:
            return bisect_right(self.xv if use_x else self.yv, target) - 1
        lo, hi = -1, len(self.u) - 1
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if self._without(mid, excluded, use_x) <= target:
                lo = mid
            else:
                hi = mid - 1
        return lo

    def _cp_tail(self, k: int, excluded: Sequence[int]) -> tuple[float, float]:
        """(Σ a, Σ e) of constant-product curves active beyond the last breakpoint."""
        a, e = self.cp_a[k], self.cp_e[k]
        for i in excluded:
            cp = self.curves[i].cp
            if cp is not None and self.curves[i].u[0] <= self.u[k]:
                a -= cp[0]
                e -= cp[3]
        return a, e

    # -- solving ---------------------------------------------------------------------------

    def solve_in(self, amount: float, excluded: Sequence[int] = ()) -> float:
        """u at which the (non-excluded) curves absorb exactly `amount` of input."""
        k = self._last_at_most(amount, excluded, True)
        if k < 0 or amount <= 0.0:
            return self.u[0]
        x_k = self._without(k, excluded, True) if excluded else self.xv[k]
        if k == len(self.u) - 1:
            slope, _ = self._cp_tail(k, excluded)
            if amount <= x_k * (1.0 + 1e-12):
                return self.u[k]  # exactly at (float) capacity: integer caps decide
            if slope <= 0.0:
                raise CapacityExceeded("input exceeds the capacity of every source")
            return self.u[k] + (amount - x_k) / slope
        x_next = self._without(k + 1, excluded, True) if excluded else self.xv[k + 1]
        # Every curve is linear in u between breakpoints, so the total is too.
        t = (amount - x_k) / (x_next - x_k) if x_next > x_k else 0.0
        return self.u[k] + t * (self.u[k + 1] - self.u[k])

    def solve_out(self, amount: float, excluded: Sequence[int] = ()) -> float:
        """u at which the (non-excluded) curves deliver exactly `amount` of output."""
        k = self._last_at_most(amount, excluded, False)
        if k < 0 or amount <= 0.0:
            return self.u[0]
        uk = self.u[k]
        y_k = self._without(k, excluded, False) if excluded else self.yv[k]
        if k == len(self.u) - 1:
            # Only constant-product curves still move: y_k + E·(1/u − 1/u_k) = amount.
            _, e = self._cp_tail(k, excluded)
            if amount <= y_k * (1.0 + 1e-12):
                return uk
            inv = 1.0 / uk + (amount - y_k) / e if e < 0.0 else 0.0
            if inv <= 0.0:
                raise CapacityExceeded("output exceeds the capacity of every source")
            return 1.0 / inv
        u1 = self.u[k + 1]
        y_1 = self._without(k + 1, excluded, False) if excluded else self.yv[k + 1]
        if y_1 <= y_k:
            return uk
        # Y = (linear part) + (constant-product part c + e/u) on [uk, u1].
        c, e = self.cp_c[k], self.cp_e[k]
        for i in excluded:
            cp = self.curves[i].cp
            if cp is not None and self.curves[i].u[0] <= uk:
                c -= cp[2]
                e -= cp[3]
        lin_k = y_k - (c + e / uk)
        slope = ((y_1 - (c + e / u1)) - lin_k) / (u1 - uk)

        def g(u: float) -> float:
            return lin_k + slope * (u - uk) + c + e / u - amount

        return _root(g, lambda u: slope - e / (u * u), uk, u1, (amount - y_k) / (y_1 - y_k))

    def x_total(self, u: float) -> tuple[float, float]:
        """(X(u), dX/du) of all curves together (X is linear between breakpoints)."""
        us = self.u
        if u < us[0]:
            return 0.0, 0.0
        k = bisect_right(us, u) - 1
        if k == len(us) - 1:
            return self.xv[k] + self.cp_a[k] * (u - us[k]), self.cp_a[k]
        slope = (self.xv[k + 1] - self.xv[k]) / (us[k + 1] - us[k])
        return self.xv[k] + slope * (u - us[k]), slope

    def allocation(self, u: float, excluded: Sequence[int] = ()) -> list[tuple[float, float]]:
        """(x, y) of every curve at u; excluded curves get (0, 0)."""
        out = [cv.at(u) for cv in self.curves]
        for i in excluded:
            out[i] = (0.0, 0.0)
        return out


def _root(
    g: Callable[[float], float], dg: Callable[[float], float], lo: float, hi: float, t0: float
) -> float:
    """Root of an increasing g on [lo, hi]: Newton from the secant guess, kept in bracket."""
    u = lo + t0 * (hi - lo)
    for _ in range(60):
        v = g(u)
        if v > 0.0:
            hi = u
        else:
            lo = u
        d = dg(u)
        nxt = u - v / d if d > 0.0 else math.nan
        if not lo < nxt < hi:
            nxt = 0.5 * (lo + hi)
        if abs(nxt - u) <= 1e-15 * u:
            return nxt
        u = nxt
    return u
