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

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cache
from itertools import repeat
from operator import add, mul

from gmpy2 import mpz, powmod

from settlement.zk.circuit import LC, ConstraintSystem, lc_sum
from settlement.zk.constants import SCALAR_FIELD
from settlement.zk.poseidon_params import MAX_WIDTH, MIN_WIDTH, params

__all__ = ["poseidon", "poseidon_constraints", "poseidon_gadget", "poseidon_reference", "prepare"]

P = SCALAR_FIELD


def _width(n_inputs: int) -> int:
    t = n_inputs + 1
    if not MIN_WIDTH <= t <= MAX_WIDTH:
        raise ValueError(f"Poseidon takes 1..{MAX_WIDTH - 1} inputs, got {n_inputs}")
    return t


def poseidon(inputs: Sequence[int]) -> int:
    """circomlib's Poseidon hash of 1..16 field elements (each reduced mod r).

    Computed in the equivalent optimised form of the Poseidon paper (appendix B, as
    circomlibjs's `poseidon_opt`): in partial rounds only state[0] gets a round constant
    and the MDS mix is a sparse matrix (2t - 1 products instead of t^2); the dense rest
    of each partial round's matrix is moved to the last full round before them. The same
    permutation, so the same hashes: `poseidon_reference` computes the rounds as
    specified, and a test compares the two for every width. A leaf's 3 inputs, hashed
    on every swap confirmation (its receipt's leaf hash), go through `_poseidon3`: the
    same rounds written out for that width."""
    if len(inputs) == 3:
        return _poseidon3(*inputs)
    t = _width(len(inputs))
    f = _fast_params(t)
    p = _P_MPZ
    s = [mpz(0), *(mpz(x % P) for x in inputs)]
    for rc, mix in zip(f.first_constants, f.first_mixes, strict=True):
        s = [powmod(a + c, 5, p) for a, c in zip(s, rc, strict=True)]
        s = [sum(map(mul, row, s)) % p for row in mix]
    # Elements 1.. only ever get w * x0 added in partial rounds: they are reduced once,
    # after them (a few hundred bits more than p in the meantime, cheaper than a % each).
    x0, rest = s[0], s[1:]
    for k, m00, v, w in f.partial:
        x0 = powmod(x0 + k, 5, p)
        x0, rest = (m00 * x0 + sum(map(mul, v, rest))) % p, list(map(add, rest, map(mul, w, repeat(x0))))
    s = [x0, *(a % p for a in rest)]
    for rc in f.last_constants:
        s = [powmod(a + c, 5, p) for a, c in zip(s, rc, strict=True)]
        s = [sum(map(mul, row, s)) % p for row in f.mds]
    return int(s[0])


def _poseidon3(x1: int, x2: int, x3: int) -> int:
    """`poseidon([x1, x2, x3])`, the leaf hash of every swap's receipt, written out for its
    width (t = 4): the state in four locals and the 4x4 mixes as sums of products, with no
    lists built per round. 0.13 ms against 0.23 ms through the general loop (timeit, same
    run, this machine); `test_poseidon` checks it against the specified rounds."""
    f = _fast_params(4)
    p = _P_MPZ
    first = zip(f.first_constants, f.first_mixes, strict=True)
    a0, a1, a2, a3 = _full_rounds4((mpz(0), mpz(x1 % P), mpz(x2 % P), mpz(x3 % P)), first)
    for k, m00, (v1, v2, v3), (w1, w2, w3) in f.partial:
        a0 = powmod(a0 + k, 5, p)
        a0, a1, a2, a3 = (m00 * a0 + v1 * a1 + v2 * a2 + v3 * a3) % p, a1 + w1 * a0, a2 + w2 * a0, a3 + w3 * a0
    return int(_full_rounds4((a0, a1 % p, a2 % p, a3 % p), zip(f.last_constants, repeat(f.mds)))[0])


def _full_rounds4(a: tuple[mpz, mpz, mpz, mpz], rounds: Iterable[tuple[list[mpz], list[list[mpz]]]]) -> tuple[mpz, mpz, mpz, mpz]:
    """Full rounds of the width-4 state: each adds its constants, x^5 on every element,
    then its mix."""
    p = _P_MPZ
    a0, a1, a2, a3 = a
    for (c0, c1, c2, c3), mix in rounds:
        (m00, m01, m02, m03), (m10, m11, m12, m13), (m20, m21, m22, m23), (m30, m31, m32, m33) = mix
        a0, a1, a2, a3 = powmod(a0 + c0, 5, p), powmod(a1 + c1, 5, p), powmod(a2 + c2, 5, p), powmod(a3 + c3, 5, p)
        a0, a1, a2, a3 = (
            (m00 * a0 + m01 * a1 + m02 * a2 + m03 * a3) % p,
            (m10 * a0 + m11 * a1 + m12 * a2 + m13 * a3) % p,
            (m20 * a0 + m21 * a1 + m22 * a2 + m23 * a3) % p,
            (m30 * a0 + m31 * a1 + m32 * a2 + m33 * a3) % p,
        )
    return a0, a1, a2, a3


def prepare(n_inputs: int) -> None:
    """Compute the hash's constants for `n_inputs` inputs now. Otherwise the first hash of
    that width computes them: the round constants from the Grain LFSR and the optimised
    form's matrices, ~150 ms of pure Python (measured for 3 inputs, this machine), which
    on a server's event loop holds up every request behind that first hash."""
    _fast_params(_width(n_inputs))


def poseidon_reference(inputs: Sequence[int]) -> int:
    """The same hash, round by round as specified (the check on `poseidon`): add the
    round constants, x^5 on every element (full rounds) or on element 0 (partial), mix."""
    t = _width(len(inputs))
    prm = params(t)
    rcs, mds = _mpz_params(t)
    half = prm.full_rounds // 2
    last_partial = half + prm.partial_rounds
    p = _P_MPZ
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


@dataclass(frozen=True)
class _FastParams:
    first_constants: list[list[mpz]]  # the first R_F/2 full rounds
    first_mixes: list[list[list[mpz]]]  # their matrices: M, .., M, then P = A_0 M
    partial: list[tuple[mpz, mpz, list[mpz], list[mpz]]]  # per partial round: k, m00, v, w
    last_constants: list[list[mpz]]  # the last R_F/2 full rounds (the first with the carry)
    mds: list[list[mpz]]


def _matmul(a: list[list[int]], b: list[list[int]]) -> list[list[int]]:
    cols = list(zip(*b, strict=True))
    return [[sum(x * y for x, y in zip(row, col, strict=True)) % P for col in cols] for row in a]


def _inverse(m: list[list[int]]) -> list[list[int]]:
    """Inverse mod P by Gauss-Jordan (an MDS matrix's square blocks are invertible)."""
    n = len(m)
    a = [[*row, *(int(i == j) for j in range(n))] for i, row in enumerate(m)]
    for col in range(n):
        piv = next(r for r in range(col, n) if a[r][col] % P)
        a[col], a[piv] = a[piv], a[col]
        inv = pow(a[col][col], -1, P)
        a[col] = [x * inv % P for x in a[col]]
        for r in range(n):
            if r != col and a[r][col]:
                f = a[r][col]
                a[r] = [(x - f * y) % P for x, y in zip(a[r], a[col], strict=True)]
    return [row[n:] for row in a]


@cache
def _fast_params(t: int) -> _FastParams:
    prm = params(t)
    rc = [list(r) for r in prm.round_constants]
    m = [list(r) for r in prm.mds]
    half, r_p = prm.full_rounds // 2, prm.partial_rounds
    # 1. Constants. Round r maps s to M S0(s + c_r), and S0 (x^5 on element 0) passes
    # elements 1.. through unchanged: M S0(s + c) = M S0(s + c[0] e0) + M (0, c[1:]). The
    # second term is a constant: carry it, as d, into the next round's constants. Then
    # each partial round adds the single k = (d + c_r)[0], and the carry after the last
    # one joins the next full round's constants.
    d = [0] * t
    ks = []
    for r in range(half, half + r_p):
        e = [(x + y) % P for x, y in zip(d, rc[r], strict=True)]
        ks.append(e[0])
        d = [sum(row[j] * e[j] for j in range(1, t)) % P for row in m]
    carried = [(x + y) % P for x, y in zip(d, rc[half + r_p], strict=True)]
    # 2. Matrices. Factor each partial round's matrix as B A, with A = diag(1, M^) (M^ the
    # lower right block) and B = [[m00, v], [w, I]], v = (first row's rest) M^^-1, w =
    # the first column's rest: B A has the same first row, first column and block. A
    # leaves element 0 alone, so it commutes with the next S0 and k: it moves to the
    # round before, whose matrix becomes A M, factored in turn; the first partial round's
    # A lands on the last full round before them (P = A M), a dense mix anyway.
    partial: list[tuple[mpz, mpz, list[mpz], list[mpz]]] = []
    eff = m
    for i in reversed(range(r_p)):
        block = [row[1:] for row in eff[1:]]
        inv = _inverse(block)
        first = eff[0][1:]
        v = [sum(first[k] * inv[k][j] for k in range(t - 1)) % P for j in range(t - 1)]
        w = [row[0] for row in eff[1:]]
        partial.append((mpz(ks[i]), mpz(eff[0][0]), [mpz(x) for x in v], [mpz(x) for x in w]))
        a = [[int(r == c) for c in range(t)] if r == 0 else [0, *block[r - 1]] for r in range(t)]
        eff = _matmul(a, m)
    partial.reverse()

    def mz(rows: list[list[int]]) -> list[list[mpz]]:
        return [[mpz(x) for x in row] for row in rows]

    return _FastParams(
        first_constants=mz(rc[:half]),
        first_mixes=[mz(m)] * (half - 1) + [mz(eff)],
        partial=partial,
        last_constants=mz([carried, *rc[half + r_p + 1 :]]),
        mds=mz(m),
    )


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
