"""The R1CS builder: arithmetic, wire order, witness generation, structure independence."""

from __future__ import annotations

from settlement.zk.circuit import LC, ONE, ConstraintSystem, lc_sum
from settlement.zk.constants import SCALAR_FIELD as R


def _cube_circuit(x_val: int) -> ConstraintSystem:
    """out = x^3 + x + 5 with out public (the classic example), x private."""
    cs = ConstraintSystem("cube")
    out = cs.public_output((x_val**3 + x_val + 5) % R)
    x = cs.private(x_val)
    x2 = cs.mul(x, x)
    x3 = cs.mul(x2, x)
    cs.assert_equal(x3 + x + 5, out)
    return cs


def test_lc_arithmetic_tracks_values() -> None:
    cs = ConstraintSystem()
    a, b = cs.private(3), cs.private(R - 1)
    assert (a + b).value == 2
    assert (a - b).value == 4
    assert (5 - a).value == 2
    assert (-a).value == R - 3
    assert (a * 7).value == 21 and (7 * a).value == 21
    assert (a + 10).value == 13
    assert lc_sum([a, b, ONE], [2, 3, 4]).value == (6 + 3 * (R - 1) + 4) % R
    assert LC.const(5).constant_value() == 5
    assert a.constant_value() is None
    assert (a - a).constant_value() == 0


def test_honest_witness_satisfies_and_public_values() -> None:
    cs = _cube_circuit(3)
    r1cs = cs.compile()
    w = cs.witness()
    assert r1cs.n_constraints == 3
    assert r1cs.is_satisfied(w)
    assert r1cs.public_inputs(w) == [35]
    assert cs.first_unsatisfied() is None


def test_wrong_witness_fails() -> None:
    cs = _cube_circuit(3)
    r1cs = cs.compile()
    w = cs.witness()
    for wire in range(1, r1cs.n_wires):
        bad = list(w)
        bad[wire] = (bad[wire] + 1) % R
        assert not r1cs.is_satisfied(bad), wire


def test_iden3_wire_order_outputs_then_inputs_then_private() -> None:
    cs = ConstraintSystem()
    p = cs.private(2)
    i1 = cs.public_input(3)
    o = cs.public_output(6)
    i2 = cs.public_input(1)
    cs.assert_equal(cs.mul(p, i1) * 1, o * i2.value)  # 2*3 == 6*1
    cs.assert_equal(i2, ONE)
    r1cs = cs.compile()
    w = cs.witness()
    assert r1cs.n_public == 3 and r1cs.n_public_outputs == 1
    assert w[:4] == [1, 6, 3, 1]
    assert [cs.wire_of(s) for s in (o, i1, i2, p)] == [1, 2, 3, 4]
    assert r1cs.is_satisfied(w)
    for con in r1cs.constraints:
        for lc in (con.a, con.b, con.c):
            wires = [wi for wi, _ in lc]
            assert wires == sorted(set(wires))
            assert all(0 < c < R for _, c in lc)


def test_multiplying_by_a_constant_costs_nothing() -> None:
    cs = ConstraintSystem()
    x = cs.private(4)
    y = cs.mul(x, LC.const(3)) + cs.mul(ONE * 2, x)
    assert cs.n_constraints == 0
    assert y.value == 20


def test_structure_does_not_depend_on_values() -> None:
    assert _cube_circuit(3).compile().digest() == _cube_circuit(11).compile().digest()


def test_witness_only_mode_gives_same_witness() -> None:
    full = _cube_circuit(9)
    cs = ConstraintSystem(emit=False)
    out = cs.public_output((9**3 + 9 + 5) % R)
    x = cs.private(9)
    x3 = cs.mul(cs.mul(x, x), x)
    cs.assert_equal(x3 + x + 5, out)
    assert cs.n_constraints == 0
    assert cs.witness() == full.witness()


def test_large_build_is_linear_time() -> None:
    # 2^14 multiplication constraints; a smoke test that building stays cheap per constraint.
    cs = ConstraintSystem()
    acc = cs.private(2)
    for _ in range(1 << 14):
        acc = cs.mul(acc, acc + 1)
    r1cs = cs.compile()
    assert r1cs.n_constraints == 1 << 14
    assert r1cs.is_satisfied(cs.witness())
