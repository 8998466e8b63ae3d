"""Gadgets: honest witnesses satisfy, each kind of wrong witness does not."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from settlement.zk import gadgets as g
from settlement.zk.circuit import LC, ConstraintSystem
from settlement.zk.constants import SCALAR_FIELD as R

N = 16  # bit width for the comparison tests


def _ok(cs: ConstraintSystem) -> bool:
    return cs.compile().is_satisfied(cs.witness())


def _tampered_ok(cs: ConstraintSystem, signal: LC, value: int) -> bool:
    w = cs.witness()
    w[cs.wire_of(signal)] = value % R
    return cs.compile().is_satisfied(w)


@pytest.mark.parametrize(("value", "ok"), [(0, True), (1, True), (2, False), (R - 1, False)])
def test_boolean(value: int, ok: bool) -> None:
    cs = ConstraintSystem()
    g.assert_boolean(cs, cs.private(value))
    assert cs.n_constraints == 1
    assert _ok(cs) is ok


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        (0, True),
        (1, True),
        ((1 << 96) - 1, True),
        (1 << 96, False),
        ((1 << 97) + 5, False),
        (R - 1, False),
    ],
)
def test_range_check_96(value: int, ok: bool) -> None:
    cs = ConstraintSystem()
    g.range_check(cs, cs.private(value), 96)
    assert cs.n_constraints == 97
    assert _ok(cs) is ok


def test_to_bits_values_and_non_boolean_bit_rejected() -> None:
    cs = ConstraintSystem()
    bits = g.to_bits(cs, cs.private(0b1011), 4)
    assert [b.value for b in bits] == [1, 1, 0, 1]
    assert _ok(cs)
    # A "bit" of 3 with its neighbour lowered keeps the sum (3 + 2*0 + ... = 0b1011 - ...):
    # the booleanity constraint is what catches it.
    w = cs.witness()
    w[cs.wire_of(bits[0])] = 3
    w[cs.wire_of(bits[1])] = 0
    assert cs.compile().first_unsatisfied(w) is not None


def test_bounded_value_is_its_bits() -> None:
    cs = ConstraintSystem()
    v = g.bounded(cs, 1234, 12)
    assert v.value == 1234 and cs.n_constraints == 12
    cs2 = ConstraintSystem()
    v2 = g.bounded(cs2, 1 << 12, 12)  # out of range: the sum is not the value
    assert v2.value != 1 << 12


@settings(max_examples=40, deadline=None)
@given(st.integers(0, (1 << N) - 1), st.integers(0, (1 << N) - 1))
def test_comparisons_honest(a: int, b: int) -> None:
    cs = ConstraintSystem()
    x, y = cs.private(a), cs.private(b)
    lt = g.less_than(cs, x, y, N)
    le = g.less_or_equal(cs, x, y, N)
    eq = g.is_equal(cs, x, y)
    assert (lt.value, le.value, eq.value) == (int(a < b), int(a <= b), int(a == b))
    assert _ok(cs)


@pytest.mark.parametrize(("a", "b"), [(3, 5), (5, 3), (7, 7), (0, (1 << N) - 1), ((1 << N) - 1, 0)])
@pytest.mark.parametrize("gadget", [g.less_than, g.less_or_equal])
def test_comparison_output_cannot_be_flipped(
    gadget: Callable[[ConstraintSystem, LC, LC, int], LC], a: int, b: int
) -> None:
    cs = ConstraintSystem()
    out = gadget(cs, cs.private(a), cs.private(b), N)
    assert _ok(cs)
    # The output is 1 - top bit: flipping that bit (the signal behind it) must fail.
    (top_var,) = (k for k in out.terms if k)
    top = LC({top_var: 1}, 1 - out.value)
    assert not _tampered_ok(cs, top, out.value)


@pytest.mark.parametrize(
    ("a", "b", "ok"), [(3, 5, True), (5, 5, True), (6, 5, False), (0, 0, True)]
)
def test_assert_less_or_equal(a: int, b: int, ok: bool) -> None:
    cs = ConstraintSystem()
    g.assert_less_or_equal(cs, cs.private(a), cs.private(b), N)
    assert _ok(cs) is ok


@pytest.mark.parametrize("value", [0, 1, 5, R - 1])
def test_is_zero(value: int) -> None:
    cs = ConstraintSystem()
    out = g.is_zero(cs, cs.private(value))
    assert out.value == int(value == 0)
    assert cs.n_constraints == 2
    assert _ok(cs)
    assert not _tampered_ok(cs, out, 1 - out.value)


def test_is_zero_inverse_hint_cannot_lie() -> None:
    cs = ConstraintSystem()
    x = cs.private(5)
    out = g.is_zero(cs, x)
    w = cs.witness()
    w[cs.wire_of(out)] = 1  # claim "zero" ...
    inv_wire = cs.wire_of(out) - 1  # ... with any inverse hint
    for inv in (0, 1, pow(5, -1, R)):
        w[inv_wire] = inv
        assert not cs.compile().is_satisfied(w)


@pytest.mark.parametrize("cond", [0, 1])
def test_select(cond: int) -> None:
    cs = ConstraintSystem()
    c = cs.private(cond)
    g.assert_boolean(cs, c)
    out = g.select(cs, c, cs.private(11), cs.private(22))
    assert out.value == (11 if cond else 22)
    assert _ok(cs)
    (prod_var,) = (k for k in out.terms if k > 3)
    assert not _tampered_ok(cs, LC({prod_var: 1}, 0), 7)


def test_select_with_non_boolean_condition_rejected() -> None:
    cs = ConstraintSystem()
    c = cs.private(2)
    g.assert_boolean(cs, c)
    g.select(cs, c, cs.private(11), cs.private(22))
    assert not _ok(cs)


def test_bit_width_limits() -> None:
    cs = ConstraintSystem()
    with pytest.raises(ValueError):
        g.range_check(cs, cs.private(1), 0)
    with pytest.raises(ValueError):
        g.range_check(cs, cs.private(1), 253)
