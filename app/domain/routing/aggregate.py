"""The aggregate of many curves: total input and output as functions of u = λ^(-1/2).

Merging every curve's breakpoints into one sorted array, the sum of all curves is, on
each interval between consecutive breakpoints, X(u) = A·u + B and Y(u) = C + D·u + E/u
(the shapes curves are made of).  Prefix sums of the coefficient changes give A…E per
interval, and X, Y at every breakpoint; both ascend with u.  Solving "which marginal
price λ* makes the sources absorb exactly X" is then a binary search over breakpoints
and one linear equation — O(log K) per order, whatever the number of sources.

Curves can be *excluded* per solve (the gas filter drops sources one at a time): the
search subtracts their contributions on the fly instead of rebuilding the merge.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from app.domain.routing.curves import Curve, Piece

__all__ = ["Aggregate", "CapacityExceeded"]


class CapacityExceeded(ValueError):
    """The curves together cannot absorb (or deliver) the requested amount."""


@dataclass(frozen=True, slots=True, eq=False)
class Aggregate:
    curves: tuple[Curve, ...]
    pieces: tuple[list[Piece], ...]
    u: list[float]
    a: list[float]
    b: list[float]
    c: list[float]
    d: list[float]
    e: list[float]
    xv: list[float]  # X at each breakpoint
    yv: list[float]  # Y at each breakpoint

    @classmethod
    def build(cls, curves: Sequence[Curve]) -> Aggregate:
        starts: list[float] = []
        deltas: list[tuple[float, float, float, float, float]] = []
        all_pieces = tuple(cv.pieces() for cv in curves)
        for pcs in all_pieces:
            prev = (0.0, 0.0, 0.0, 0.0, 0.0)
            for u0, a, b, c, d, e in pcs:
                starts.append(u0)
                deltas.append((a - prev[0], b - prev[1], c - prev[2], d - prev[3], e - prev[4]))
                prev = (a, b, c, d, e)
        if not starts:
            raise CapacityExceeded("no curves")
        us = np.asarray(starts)
        order = np.argsort(us, kind="stable")  # stable: equal u keep curve order
        us = us[order]
        cum = np.cumsum(np.asarray(deltas)[order], axis=0)
        ca, cb, cc, cd, ce = (cum[:, i] for i in range(5))
        xv = np.maximum(ca * us + cb, 0.0)
        yv = np.maximum(cc + cd * us + ce / us, 0.0)
        # Prefix sums accumulate rounding; X and Y must ascend for the binary search.
        xv = np.maximum.accumulate(xv)
        yv = np.maximum.accumulate(yv)
        return cls(
            tuple(curves),
            all_pieces,
            us.tolist(),
            ca.tolist(),
            cb.tolist(),
            cc.tolist(),
            cd.tolist(),
            ce.tolist(),
            xv.tolist(),
            yv.tolist(),
        )

    @property
    def best_u(self) -> float:
        return self.u[0]

    # -- solving ---------------------------------------------------------------------

    def _coeffs(self, k: int, excluded: Sequence[int]) -> tuple[float, ...]:
        a, b, c, d, e = self.a[k], self.b[k], self.c[k], self.d[k], self.e[k]
        uk = self.u[k]
        for i in excluded:
            p = _piece_at(self.curves[i], self.pieces[i], uk)
            if p is not None:
                a, b, c, d, e = a - p[1], b - p[2], c - p[3], d - p[4], e - p[5]
        return a, b, c, d, e

    def _last_below(
        self, values: list[float], target: float, excluded: Sequence[int], use_x: bool
    ) -> int:
        """Largest k with value(k) ≤ target, where value excludes some curves."""
        if not excluded:
            return bisect_right(values, target) - 1
        lo, hi = -1, len(values) - 1  # invariant: value(lo) ≤ target < value(hi+1)
        while lo < hi:
            mid = (lo + hi + 1) // 2
            v = values[mid]
            um = self.u[mid]
            for i in excluded:
                xi, yi = self.curves[i].at(um)
                v -= xi if use_x else yi
            if v <= target:
                lo = mid
            else:
                hi = mid - 1
        return lo

    def solve_in(self, amount: float, excluded: Sequence[int] = ()) -> float:
        """u at which the (non-excluded) curves absorb exactly `amount` of input."""
        if amount <= 0.0:
            return self.u[0]
        k = self._last_below(self.xv, amount, excluded, True)
        if k < 0:
            return self.u[0]
        a, b, *_ = self._coeffs(k, excluded)
        if a <= 0.0:
            if k == len(self.u) - 1:
                raise CapacityExceeded("input exceeds the capacity of every source")
            return self.u[k]
        u = (amount - b) / a
        hi = self.u[k + 1] if k + 1 < len(self.u) else math.inf
        return min(max(u, self.u[k]), hi)

    def solve_out(self, amount: float, excluded: Sequence[int] = ()) -> float:
        """u at which the (non-excluded) curves deliver exactly `amount` of output."""
        if amount <= 0.0:
            return self.u[0]
        k = self._last_below(self.yv, amount, excluded, False)
        if k < 0:
            return self.u[0]
        _, _, c, d, e = self._coeffs(k, excluded)
        lo = self.u[k]
        hi = self.u[k + 1] if k + 1 < len(self.u) else math.inf
        if d == 0.0 and e == 0.0:
            if k == len(self.u) - 1:
                raise CapacityExceeded("output exceeds the capacity of every source")
            return lo
        # Y(u) = c + d·u + e/u rises on [lo, hi]: solve d·u² + (c − Y)·u + e = 0.
        if d == 0.0:
            u = -e / (c - amount) if c > amount else math.inf
        else:
            q = c - amount
            disc = q * q - 4.0 * d * e
            u = (-q + math.sqrt(max(disc, 0.0))) / (2.0 * d)
        if not lo <= u <= hi:
            if math.isinf(hi) and (d == 0.0 and c <= amount):
                raise CapacityExceeded("output exceeds the capacity of every source")
            u = min(max(u, lo), hi)
        return u

    def allocation(self, u: float, excluded: Sequence[int] = ()) -> list[tuple[float, float]]:
        """(x, y) of every curve at u; excluded curves get (0, 0)."""
        out = [cv.at(u) for cv in self.curves]
        for i in excluded:
            out[i] = (0.0, 0.0)
        return out


def _piece_at(cv: Curve, pieces: list[Piece], u: float) -> Piece | None:
    if u < cv.u[0]:
        return None
    j = bisect_right(cv.u, u) - 1
    return pieces[min(j, len(pieces) - 1)]
