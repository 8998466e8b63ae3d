"""Poseidon: parameters, known circomlibjs vectors, and the gadget against the function."""

from __future__ import annotations

import random

import pytest

from settlement.zk.circuit import LC, ConstraintSystem
from settlement.zk.constants import SCALAR_FIELD as R
from settlement.zk.poseidon import (
    _fast_params,
    poseidon,
    poseidon_constraints,
    poseidon_gadget,
    poseidon_reference,
    prepare,
)
from settlement.zk.poseidon_params import params, partial_rounds

# Outputs of circomlibjs 0.1.7 `buildPoseidon()` (the integration test recomputes them live).
KNOWN = [
    ([1], 18586133768512220936620570745912940619677854269274689475585506675881198879027),
    ([1, 2], 7853200120776062878684798364095072458815029376092732009249414926327459813530),
    (
        [1, 2, 3, 4],
        18821383157269793795438455681495246036402687001665670618754263018637548127333,
    ),
]


@pytest.mark.parametrize(("inputs", "expected"), KNOWN)
def test_known_vectors(inputs: list[int], expected: int) -> None:
    assert poseidon(inputs) == expected


@pytest.mark.parametrize("t", range(2, 8))
def test_parameters_shape(t: int) -> None:
    p = params(t)
    assert p.full_rounds == 8 and p.partial_rounds == partial_rounds(t)
    assert len(p.round_constants) == 8 + p.partial_rounds
    assert all(len(rc) == t and all(0 <= c < R for c in rc) for rc in p.round_constants)
    assert len(p.mds) == t and all(len(row) == t for row in p.mds)
    # Cauchy matrices are invertible: check via Gaussian elimination mod r.
    m = [list(row) for row in p.mds]
    for col in range(t):
        piv = next(r for r in range(col, t) if m[r][col])
        m[col], m[piv] = m[piv], m[col]
        inv = pow(m[col][col], -1, R)
        for r in range(col + 1, t):
            f = m[r][col] * inv % R
            m[r] = [(a - f * b) % R for a, b in zip(m[r], m[col], strict=True)]
    assert all(m[i][i] for i in range(t))
    assert params(t) is p  # cached


def test_input_count_limits_and_reduction() -> None:
    with pytest.raises(ValueError):
        poseidon([])
    with pytest.raises(ValueError):
        poseidon([0] * 17)
    assert poseidon([R + 1, 2]) == poseidon([1, 2])


@pytest.mark.parametrize("n", range(1, 7))
def test_gadget_matches_function_and_constraint_count(n: int) -> None:
    rng = random.Random(n)
    values = [rng.randrange(R) for _ in range(n)]
    cs = ConstraintSystem()
    ins = [cs.private(v) for v in values]
    out = poseidon_gadget(cs, ins)
    assert out.value == poseidon(values)
    assert cs.n_constraints == poseidon_constraints(n)
    r1cs = cs.compile()
    assert r1cs.is_satisfied(cs.witness())


def test_constraint_budget_for_the_leg_hash() -> None:
    # (R_F * t + R_P - 1) * 3 with the round-0 capacity S-box free, as circom reports.
    assert poseidon_constraints(2) == 240
    assert poseidon_constraints(4) == 297


def test_gadget_rejects_tampered_wires() -> None:
    cs = ConstraintSystem()
    h = cs.public_output(poseidon([5, 6]))
    ins = [cs.private(5), cs.private(6)]
    cs.assert_equal(poseidon_gadget(cs, ins), h)
    r1cs = cs.compile()
    w = cs.witness()
    assert r1cs.is_satisfied(w)
    rng = random.Random(0)
    for wire in [1, 2, 3, *rng.sample(range(4, r1cs.n_wires), 20)]:
        bad = list(w)
        bad[wire] = (bad[wire] + 1) % R
        assert not r1cs.is_satisfied(bad), wire


@pytest.mark.parametrize("n", [1, 2, 4, 6])
def test_witness_only_path_allocates_the_same_signals(n: int) -> None:
    rng = random.Random(100 + n)
    values = [rng.randrange(R) for _ in range(n)]

    def run(emit: bool) -> tuple[list[int], int]:
        cs = ConstraintSystem(emit=emit)
        ins = [cs.private(v) for v in values]
        ins[0] = ins[0] if n == 1 else ins[0] * 0 + 5  # one constant input, when possible
        out = poseidon_gadget(cs, ins)
        y = cs.mul(out, out)  # the output is usable downstream in both modes
        return cs.witness(), y.value

    assert run(False) == run(True)
    cs = ConstraintSystem(emit=False)
    assert poseidon_gadget(cs, [LC.const(1), LC.const(2)]).value == poseidon([1, 2])
    assert cs.n_signals == 1


@pytest.mark.parametrize("n", range(1, 17))
def test_optimised_rounds_equal_the_specified_ones(n: int) -> None:
    """`poseidon` (sparse partial rounds, carried constants) is the same permutation as
    the rounds computed as specified, for every width, on random and edge inputs."""
    rng = random.Random(n)
    cases = [[0] * n, [R - 1] * n, [R + 5] * n]
    cases += [[rng.randrange(R) for _ in range(n)] for _ in range(4)]
    for xs in cases:
        assert poseidon(xs) == poseidon_reference(xs)


def test_the_leaf_width_written_out_equals_the_specified_rounds() -> None:
    """`_poseidon3` (every receipt's leaf hash) on many inputs, unreduced ones included."""
    rng = random.Random(3)
    cases = [[rng.randrange(R) for _ in range(3)] for _ in range(100)]
    cases += [[rng.randrange(1 << 256) for _ in range(3)] for _ in range(20)]
    cases += [[R, R + 1, 2 * R - 1], [0, 0, 1]]
    for xs in cases:
        assert poseidon(xs) == poseidon_reference(xs)


def test_prepare_computes_a_widths_constants_before_its_first_hash() -> None:
    _fast_params.cache_clear()
    prepare(3)
    misses = _fast_params.cache_info().misses
    assert poseidon([1, 2, 3]) == poseidon_reference([1, 2, 3])
    assert _fast_params.cache_info().misses == misses  # the hash found them ready
    with pytest.raises(ValueError):
        prepare(0)
