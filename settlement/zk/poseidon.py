"""Poseidon over BN254 exactly as circomlib: `poseidon([x1..xn])` with t = n + 1.

The state starts as [0, x1, .., xn]; each of R_F + R_P rounds adds the round constants,
applies x^5 to every element (full rounds: the first and last R_F/2) or to element 0
only (partial rounds), then multiplies by the MDS matrix. The hash is state[0].

The gadget mirrors it: an S-box costs 3 constraints (x^2, x^4, x^5); additions of
constants and the MDS mix are linear and cost nothing. The capacity element of round 0
is a constant, so its S-box is free too: (R_F * t + R_P - 1) * 3 constraints per hash,
e.g. 297 for four inputs (t = 5), as circom gives for circomlib's Poseidon(4).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from operator import add, mul

from gmpy2 import mpz, powmod

from settlement.zk.circuit import LC, ConstraintSystem, lc_sum
from settlement.zk.constants import SCALAR_FIELD
from settlement.zk.poseidon_params import MAX_WIDTH, MIN_WIDTH, params

__all__ = ["poseidon", "poseidon_constraints", "poseidon_gadget"]

P = SCALAR_FIELD


def _width(n_inputs: int) -> int:
    t = n_inputs + 1
    if not MIN_WIDTH <= t <= MAX_WIDTH:
        raise ValueError(f"Poseidon takes 1..{MAX_WIDTH - 1} inputs, got {n_inputs}")
    return t


def poseidon(inputs: Sequence[int]) -> int:
    """circomlib's Poseidon hash of 1..16 field elements (each reduced mod r)."""
    t = _width(len(inputs))
    prm = params(t)
    rcs, mds = _mpz_params(t)
    half = prm.full_rounds // 2
    last_partial = half + prm.partial_rounds
    p = _P_MPZ
    # gmpy2 integers: the same arithmetic, about 1.7x faster than Python ints at 254 bits
    # (this runs once per confirmed order, for its receipt's leaf hash).
    # map() with operator functions keeps the per-element work in C: ~2x faster than
    # generator expressions (this is on the confirmation path).
    s = [mpz(0), *(mpz(x % P) for x in inputs)]
    for r, rc in enumerate(rcs):
        if r < half or r >= last_partial:
            s = [powmod(a + c, 5, p) for a, c in zip(s, rc, strict=True)]
        else:
            s = list(map(add, s, rc))
            s[0] = powmod(s[0], 5, p)
        s = [sum(map(mul, row, s)) % p for row in mds]
    return int(s[0])


_P_MPZ = mpz(P)


@cache
def _mpz_params(t: int) -> tuple[list[list[mpz]], list[list[mpz]]]:
    prm = params(t)
    return [[mpz(c) for c in rc] for rc in prm.round_constants], [[mpz(m) for m in row] for row in prm.mds]


def poseidon_constraints(n_inputs: int) -> int:
    """Constraints `poseidon_gadget` emits for n_inputs non-constant inputs."""
    t = _width(n_inputs)
    prm = params(t)
    return (prm.full_rounds * t + prm.partial_rounds - 1) * 3


def _sbox(cs: ConstraintSystem, x: LC) -> LC:
    k = x.constant_value()
    if k is not None:
        return LC.const(pow(k, 5, P))
    x2 = cs.mul(x, x)
    x4 = cs.mul(x2, x2)
    return cs.mul(x4, x)


def poseidon_gadget(cs: ConstraintSystem, inputs: Sequence[LC]) -> LC:
    """The hash of `inputs` as a linear combination of the last round's S-box outputs."""
    if not cs.emitting:
        return _poseidon_witness(cs, inputs)
    t = _width(len(inputs))
    prm = params(t)
    half = prm.full_rounds // 2
    last_partial = half + prm.partial_rounds
    mds = prm.mds
    n_rounds = prm.full_rounds + prm.partial_rounds
    state: list[LC] = [LC.const(0), *inputs]
    for r, rc in enumerate(prm.round_constants):
        state = [x + c for x, c in zip(state, rc, strict=True)]
        if r < half or r >= last_partial:
            state = [_sbox(cs, x) for x in state]
        else:
            state[0] = _sbox(cs, state[0])
        if r == n_rounds - 1:
            return lc_sum(state, mds[0])  # only state[0] is the output
        state = [lc_sum(state, row) for row in mds]
    raise AssertionError("unreachable")


def _poseidon_witness(cs: ConstraintSystem, inputs: Sequence[LC]) -> LC:
    """Witness-only twin of the gadget: same signals in the same order, plain ints.

    Tracking linear combinations through the partial rounds dominates the gadget's cost;
    without constraints to emit only the S-box values matter. Tests check that both
    paths give the same witness.
    """
    t = _width(len(inputs))
    values = [x.value for x in inputs]
    if all(x.constant_value() is not None for x in inputs):
        return LC.const(poseidon(values))
    prm = params(t)
    half = prm.full_rounds // 2
    last_partial = half + prm.partial_rounds
    n_rounds = prm.full_rounds + prm.partial_rounds
    mds = prm.mds
    # Round 0 is the only one with constant elements (the capacity and any constant
    # input): their S-boxes are free. After the first mix each element involves a signal.
    free = [True] + [x.constant_value() is not None for x in inputs]
    s = [0, *values]
    last: list[LC] = []
    for r, rc in enumerate(prm.round_constants):
        s = [(a + c) % P for a, c in zip(s, rc, strict=True)]
        for i in range(t) if r < half or r >= last_partial else (0,):
            a = s[i]
            a2 = a * a % P
            a4 = a2 * a2 % P
            s[i] = a4 * a % P
            if r == 0 and free[i]:
                continue
            cs.private(a2)
            cs.private(a4)
            x5 = cs.private(s[i])
            if r == n_rounds - 1:
                last.append(x5)
        if r == n_rounds - 1:
            return lc_sum(last, mds[0])
        s = [sum(m * a for m, a in zip(row, s, strict=True)) % P for row in mds]
    raise AssertionError("unreachable")
