"""From a float guide to exact integer legs.

The solve gives each member a float share of the order at a common marginal price.
Here those shares become integers that sum *exactly* to the amount (largest remainder,
ties to the lower member index, so the result is deterministic), and every leg's other
side comes from the source's own integer math.  Decimal changes between the order's
units and a source's native units round in the trader-safe direction: inputs and
outputs down when selling exact-in, required outputs and inputs up when buying
exact-out; the sub-unit remainder stays in the vault.
"""

from __future__ import annotations

from collections.abc import Sequence

from app.domain.routing.plan import Composite, Direct, Stage
from app.domain.routing.result import Leg
from app.domain.types import CANONICAL_DECIMALS, convert_amount

__all__ = [
    "ceil_convert",
    "composite_in",
    "composite_out",
    "direct_in",
    "direct_out",
    "grain",
    "in_cap",
    "integer_split",
    "out_cap",
]


def ceil_convert(amount: int, from_decimals: int, to_decimals: int) -> int:
    if to_decimals >= from_decimals:
        return amount * 10 ** (to_decimals - from_decimals)
    return -(-amount // 10 ** (from_decimals - to_decimals))


def in_cap(m: Direct | Composite, unit_decimals: int) -> int | None:
    if isinstance(m, Direct) and m.cap_in is not None:
        return convert_amount(m.cap_in, m.tin.decimals, unit_decimals)
    return None


def out_cap(m: Direct | Composite, unit_decimals: int) -> int | None:
    if isinstance(m, Composite):
        return None
    if m.cap_out is not None:
        return convert_amount(m.cap_out, m.tout.decimals, unit_decimals)
    cv = m.curve
    y_max = cv.cp[2] if cv.cp is not None else cv.y[-1]
    return max(int(y_max / 10 ** (CANONICAL_DECIMALS - unit_decimals)) - 1, 0)


def integer_split(
    total: int,
    shares: Sequence[float],
    caps: Sequence[int | None],
    grains: Sequence[int] | None = None,
) -> list[int]:
    """Integers ∝ `shares` (≥ 0), within `caps`, summing exactly to `total`.

    `grains[i]` is member i's smallest useful step (10^k when its token has k fewer
    decimals than the unit): amounts are kept to whole grains, so no leg loses a
    sub-unit remainder, and what cannot be split into grains goes to a member that can
    take it (or, if none, to the largest, whose conversion leaves it in the vault).
    """
    n = len(shares)
    g = list(grains) if grains is not None else [1] * n
    s = sum(shares)
    if s <= 0.0:
        raise ValueError("nothing to split over")
    f = total / s
    raw = [x * f for x in shares]
    ints = [int(r) // g[i] * g[i] for i, r in enumerate(raw)]
    for i, c in enumerate(caps):
        if c is not None and ints[i] > c:
            ints[i] = c // g[i] * g[i]
    live = [i for i in range(n) if shares[i] > 0.0]
    rem = total - sum(ints)
    if rem < 0:
        # Float rounding overshot on a huge amount: trim the largest members.
        for i in sorted(live, key=lambda i: (-ints[i], i)):
            take = min(ints[i], -(rem // g[i]) * g[i])
            ints[i] -= take
            rem += take
            if rem >= 0:
                break
    if rem > 0:
        room = [i for i in live if caps[i] is None or ints[i] < caps[i]]  # type: ignore[operator]
        if rem <= sum(g[i] for i in room):
            # One grain each to the members furthest below their share (largest
            # remainder; ties to the lower index, so the split is deterministic).
            room.sort(key=lambda i: (-(raw[i] - ints[i]) / g[i], i))
            for i in room:
                c = caps[i]
                if g[i] <= rem and (c is None or ints[i] + g[i] <= c):
                    ints[i] += g[i]
                    rem -= g[i]
        else:
            # Float error on a huge amount: whole grains to the largest members.
            room.sort(key=lambda i: (-ints[i], i))
            for i in room:
                c = caps[i]
                add = rem // g[i] * g[i]
                if c is not None:
                    add = min(add, (c - ints[i]) // g[i] * g[i])
                ints[i] += add
                rem -= add
        if rem > 0:
            fits = [i for i in live if caps[i] is None or ints[i] + rem <= caps[i]]  # type: ignore[operator]
            pool = [i for i in fits if g[i] == 1] or fits
            if not pool:
                raise ValueError("amount exceeds every member's capacity")
            ints[max(pool, key=lambda i: (ints[i], -i))] += rem
    return ints


def grain(unit_decimals: int, token_decimals: int) -> int:
    """Smallest amount in units that moves a token with `token_decimals` by one unit."""
    return 10 ** max(unit_decimals - token_decimals, 0)


def direct_in(
    m: Direct, units: int, unit_dec: int, out_dec: int, hop: int
) -> tuple[int, Leg | None]:
    native_in = convert_amount(units, unit_dec, m.tin.decimals)
    if native_in <= 0:
        return 0, None
    got = m.source.amount_out(m.tin.symbol, native_in)
    leg = Leg(m.source.chain, m.source.kind, m.source.id, m.tin, m.tout, native_in, got, hop)
    return convert_amount(got, m.tout.decimals, out_dec), leg


def direct_out(
    m: Direct, want: int, out_dec: int, in_dec: int, hop: int
) -> tuple[int, int, Leg | None]:
    """(input in in_dec units, output in out_dec units ≥ want, leg)."""
    if want <= 0:
        return 0, 0, None
    need = ceil_convert(want, out_dec, m.tout.decimals)
    native_in = m.source.amount_in(m.tout.symbol, need)
    units_in = ceil_convert(native_in, m.tin.decimals, in_dec)
    fed = convert_amount(units_in, in_dec, m.tin.decimals)
    if m.cap_in is not None:
        # Rounding the input up to order units must not overfill a ladder; the sub-unit
        # excess stays in the vault.
        fed = min(fed, m.cap_in)
    got = m.source.amount_out(m.tin.symbol, fed)
    leg = Leg(m.source.chain, m.source.kind, m.source.id, m.tin, m.tout, fed, got, hop)
    return units_in, convert_amount(got, m.tout.decimals, out_dec), leg


def stage_in(
    stage: Stage, units: int, unit_dec: int, out_dec: int, hop: int
) -> tuple[int, list[Leg]]:
    scale = 10 ** (CANONICAL_DECIMALS - unit_dec)
    u = stage.agg.solve_in(units * float(scale))
    shares = [x for x, _ in stage.agg.allocation(u)]
    ints = integer_split(
        units,
        shares,
        [in_cap(m, unit_dec) for m in stage.members],
        [grain(unit_dec, m.tin.decimals) for m in stage.members],
    )
    total, legs = 0, []
    for m, q in zip(stage.members, ints, strict=True):
        if q > 0:
            out, leg = direct_in(m, q, unit_dec, out_dec, hop)
            total += out
            if leg is not None:
                legs.append(leg)
    return total, legs


def stage_out(
    stage: Stage, want: int, out_dec: int, in_dec: int, hop: int
) -> tuple[int, int, list[Leg]]:
    scale = 10 ** (CANONICAL_DECIMALS - out_dec)
    u = stage.agg.solve_out(want * float(scale))
    shares = [y for _, y in stage.agg.allocation(u)]
    ints = integer_split(
        want,
        shares,
        [out_cap(m, out_dec) for m in stage.members],
        [grain(out_dec, m.tout.decimals) for m in stage.members],
    )
    t_in, t_out, legs = 0, 0, []
    for m, q in zip(stage.members, ints, strict=True):
        if q > 0:
            i, o, leg = direct_out(m, q, out_dec, in_dec, hop)
            t_in += i
            t_out += o
            if leg is not None:
                legs.append(leg)
    return t_in, t_out, legs


def composite_in(m: Composite, units: int, unit_dec: int, out_dec: int) -> tuple[int, list[Leg]]:
    # The connector travels between hops in canonical units: exact, whatever its decimals.
    mid, legs1 = stage_in(m.first, units, unit_dec, CANONICAL_DECIMALS, 0)
    if mid <= 0:
        return 0, legs1
    out, legs2 = stage_in(m.second, mid, CANONICAL_DECIMALS, out_dec, 1)
    return out, legs1 + legs2


def composite_out(m: Composite, want: int, out_dec: int, in_dec: int) -> tuple[int, int, list[Leg]]:
    mid, out, legs2 = stage_out(m.second, want, out_dec, CANONICAL_DECIMALS, 1)
    units_in, _, legs1 = stage_out(m.first, mid, CANONICAL_DECIMALS, in_dec, 0)
    return units_in, out, legs1 + legs2
