"""Basic R1CS gadgets: booleans, bit decomposition, range checks, comparisons, selectors.

Each gadget emits its constraints and computes its witness (hints) in one go. Hints use
the value as given, so a gadget fed an out-of-range value still builds, and the
resulting witness simply fails the constraints: that is what the negative tests rely on.

Comparisons take a bit bound n: callers guarantee (by a range check elsewhere) that the
operands are below 2^n. n must stay below 253 so that 2^(n+1) < r and nothing wraps.
Constraint costs are in each docstring.
"""

from __future__ import annotations

from settlement.zk.circuit import LC, ONE, ConstraintSystem, lc_sum
from settlement.zk.constants import SCALAR_FIELD

__all__ = [
    "MAX_BITS",
    "alloc_bits",
    "assert_boolean",
    "assert_less_or_equal",
    "bounded",
    "is_equal",
    "is_zero",
    "less_or_equal",
    "less_than",
    "range_check",
    "select",
    "to_bits",
]

MAX_BITS = 252
_ZERO = LC({}, 0)


def _check_n(n: int) -> None:
    if not 1 <= n <= MAX_BITS:
        raise ValueError(f"bit width {n} outside 1..{MAX_BITS}")


def assert_boolean(cs: ConstraintSystem, x: LC) -> None:
    """x in {0, 1}: x * (x - 1) = 0. 1 constraint."""
    cs.constrain(x, x - 1, _ZERO)


def alloc_bits(cs: ConstraintSystem, value: int, n: int) -> tuple[list[LC], LC]:
    """n boolean signals holding the low n bits of value, and their weighted sum.

    n constraints. The sum is an LC, not a new signal: a value defined this way is
    range-checked for free, which is the cheapest way to bring a bounded value in.
    """
    _check_n(n)
    value %= SCALAR_FIELD
    bits = []
    for i in range(n):
        b = cs.private((value >> i) & 1)
        assert_boolean(cs, b)
        bits.append(b)
    return bits, lc_sum(bits, [1 << i for i in range(n)])


def bounded(cs: ConstraintSystem, value: int, n: int) -> LC:
    """A private value in [0, 2^n), as the sum of n bits. n constraints.

    A value >= 2^n yields a witness whose sum differs from the intended value; the
    caller binds the sum to something else (a hash input, a public value) so that shows.
    """
    return alloc_bits(cs, value, n)[1]


def to_bits(cs: ConstraintSystem, x: LC, n: int) -> list[LC]:
    """Little-endian bits of x, proving x < 2^n. n + 1 constraints."""
    bits, total = alloc_bits(cs, x.value, n)
    cs.assert_equal(total, x)
    return bits


def range_check(cs: ConstraintSystem, x: LC, n: int) -> None:
    """x < 2^n. n + 1 constraints."""
    to_bits(cs, x, n)


def assert_less_or_equal(cs: ConstraintSystem, a: LC, b: LC, n: int) -> None:
    """a <= b for a, b < 2^n: b - a is in [0, 2^n). n + 1 constraints."""
    range_check(cs, b - a, n)


def less_than(cs: ConstraintSystem, a: LC, b: LC, n: int) -> LC:
    """Bit (a < b) for a, b < 2^n. n + 2 constraints.

    a - b + 2^n lies in (0, 2^(n+1)); its bit n is set exactly when a >= b.
    """
    _check_n(n + 1)
    bits = to_bits(cs, a - b + (1 << n), n + 1)
    return ONE - bits[n]


def less_or_equal(cs: ConstraintSystem, a: LC, b: LC, n: int) -> LC:
    """Bit (a <= b) for a, b < 2^n. n + 2 constraints (a < b + 1, with b + 1 <= 2^n)."""
    return less_than(cs, a, b + 1, n)


def is_zero(cs: ConstraintSystem, x: LC) -> LC:
    """Bit (x == 0). 2 constraints.

    With hint inv = 1/x (0 when x = 0): out = 1 - x*inv and x*out = 0. If x != 0 the
    second forces out = 0; if x = 0 the first forces out = 1.
    """
    inv = cs.private(pow(x.value, -1, SCALAR_FIELD) if x.value else 0)
    out = cs.private(0 if x.value else 1)
    cs.constrain(x, inv, ONE - out)
    cs.constrain(x, out, _ZERO)
    return out


def is_equal(cs: ConstraintSystem, a: LC, b: LC) -> LC:
    """Bit (a == b). 2 constraints."""
    return is_zero(cs, a - b)


def select(cs: ConstraintSystem, cond: LC, if_true: LC, if_false: LC) -> LC:
    """cond ? if_true : if_false for a boolean cond (constrain it separately). 1 constraint."""
    return if_false + cs.mul(cond, if_true - if_false)
