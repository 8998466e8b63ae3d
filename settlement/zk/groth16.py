"""Groth16 over BN254: setup, prove, verify, and an on-disk key cache.

The QAP is the one snarkjs builds from the same R1CS, so keys and proofs interoperate:
- domain: the smallest power of two n >= n_constraints + n_public + 1, with snarkjs's
  roots of unity (`field.root_of_unity`);
- rows n_constraints + i (i = 0..n_public) add the constraint w_i * 0 = 0 with A = 1,
  which makes the public-input polynomials linearly independent (otherwise a prover could
  move value between IC terms);
- the H query is the Lagrange basis of the 2n-domain at its *odd* points, divided by
  delta: since A*B - C vanishes on the n-domain (the even points), its value at tau is
  the sum of its odd-point values times those Lagrange polynomials, so the prover needs
  neither a division by Z nor any coefficient form of H. It evaluates A, B, C on the odd
  coset (three iFFT/FFT pairs), and C = A o B on the domain as the witness satisfies.

Setup draws tau, alpha, beta, gamma, delta from `secrets`, uses them inside `setup` only
and drops them (Python cannot promise the memory is wiped; the devnet accepts that, a
production deployment would replace `setup` with a phase-2 ceremony on the exported
.zkey). Proving forks one helper process for the G2 and B1 multi-exponentiations.

Errors: `Groth16Error` is the root; `WitnessError` (witness does not satisfy the R1CS),
`KeyMismatchError` (key made for another circuit shape).
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from gmpy2 import mpz
from py_ecc import optimized_bn128 as ob

from settlement.zk.constants import SCALAR_FIELD
from settlement.zk.curve import (
    G1_GENERATOR,
    G2_GENERATOR,
    G1Point,
    G2Point,
    g1_add,
    g1_is_on_curve,
    g1_mul,
    g1_neg,
    g1_to_optimized,
    g2_add,
    g2_in_subgroup,
    g2_mul,
    g2_to_optimized,
)
from settlement.zk.fft import odd_coset_from_evals, odd_coset_shift
from settlement.zk.field import batch_inverse_mpz, inverse, root_of_unity
from settlement.zk.msm import (
    G1,
    G2,
    Channel,
    PointArrays,
    _window_bits,
    fixed_base_mul,
    msm,
    pause_point,
    run_parallel,
    signed_digits,
)
from settlement.zk.r1cs import R1CS

__all__ = [
    "CACHE_ENV",
    "DEFAULT_CACHE_DIR",
    "Groth16Error",
    "KeyMismatchError",
    "Progress",
    "Proof",
    "ProvingKey",
    "VerifyingKey",
    "WitnessError",
    "domain_size",
    "load_keys",
    "load_or_setup",
    "prove",
    "rich_progress",
    "save_keys",
    "setup",
    "verify",
]

R = SCALAR_FIELD
_R = mpz(R)
CACHE_ENV = "CROSSBOOK_ZK_CACHE"
# In the repository, wherever the process runs: a prover started from another directory
# would otherwise make keys of its own there, which the deployed verifiers reject.
DEFAULT_CACHE_DIR = Path(__file__).resolve().parents[2] / "var" / "zk-keys"

# CPU seconds of the last prove() in this process and its helper (for benchmarks).
LAST_PROVE_STATS: dict[str, float] = {}

# progress(stage, done, total): called as work advances; stages are short names.
Progress = Callable[[str, int, int], None]


class Groth16Error(Exception):
    """Root of the prover's errors."""


class WitnessError(Groth16Error):
    """The witness does not satisfy the constraint system."""

    def __init__(self, message: str, constraint: int | None = None) -> None:
        super().__init__(message)
        self.constraint = constraint


class KeyMismatchError(Groth16Error):
    """The key was generated for a different constraint system."""


@dataclass(frozen=True, slots=True)
class VerifyingKey:
    alpha1: G1Point
    beta2: G2Point
    gamma2: G2Point
    delta2: G2Point
    ic: tuple[G1Point, ...]  # IC_0 .. IC_n_public

    @property
    def n_public(self) -> int:
        return len(self.ic) - 1

    def to_evm_words(self) -> list[int]:
        """alpha (x, y), beta, gamma, delta (x1, x0, y1, y0: imaginary parts first, as
        EIP-197 and the generated verifier's constants), then IC_0..IC_n (x, y)."""

        def g2(p: G2Point) -> list[int]:
            x0, x1, y0, y1 = p or (0, 0, 0, 0)
            return [x1, x0, y1, y0]

        words = list(self.alpha1 or (0, 0))
        for p in (self.beta2, self.gamma2, self.delta2):
            words += g2(p)
        for q in self.ic:
            words += list(q or (0, 0))
        return words


@dataclass(frozen=True, slots=True, weakref_slot=True)
class ProvingKey:
    circuit_digest: str
    n_wires: int
    n_public: int
    n_constraints: int
    domain_size: int
    alpha1: G1Point
    beta1: G1Point
    beta2: G2Point
    delta1: G1Point
    delta2: G2Point
    a_query: tuple[G1Point, ...]  # A_i(tau) G1, every wire
    b1_query: tuple[G1Point, ...]  # B_i(tau) G1, every wire
    b2_query: tuple[G2Point, ...]  # B_i(tau) G2, every wire
    c_query: tuple[G1Point, ...]  # (beta A_i + alpha B_i + C_i)(tau)/delta, private wires
    h_query: tuple[G1Point, ...]  # L^(2n)_(2k+1)(tau)/delta, k < n


@dataclass(frozen=True, slots=True)
class Proof:
    a: G1Point
    b: G2Point
    c: G1Point

    def to_evm_args(self) -> tuple[list[int], list[list[int]], list[int]]:
        """(a, b, c) as `verifyProof` takes them: G2 coordinates imaginary part first."""
        ax, ay = self.a or (0, 0)
        bx0, bx1, by0, by1 = self.b or (0, 0, 0, 0)
        cx, cy = self.c or (0, 0)
        return [ax, ay], [[bx1, bx0], [by1, by0]], [cx, cy]

    def to_evm_words(self) -> list[int]:
        """The 8 words a, b, c flattened in calldata order."""
        a, b, c = self.to_evm_args()
        return [*a, *b[0], *b[1], *c]

    @staticmethod
    def from_evm_words(words: Sequence[int]) -> Proof:
        ax, ay, bx1, bx0, by1, by0, cx, cy = (int(w) for w in words)
        return Proof(
            None if ax == ay == 0 else (ax, ay),
            None if bx0 == bx1 == by0 == by1 == 0 else (bx0, bx1, by0, by1),
            None if cx == cy == 0 else (cx, cy),
        )


def domain_size(r1cs: R1CS) -> int:
    """snarkjs's domain: constraints plus one row per public signal and one for wire 0."""
    need = r1cs.n_constraints + r1cs.n_public + 1
    return 1 << max(need - 1, 1).bit_length()


def _rand_nonzero() -> int:
    return secrets.randbelow(R - 1) + 1


@contextmanager
def rich_progress(transient: bool = True) -> Iterator[Progress]:
    """A `progress` callback drawing one rich progress bar per stage (setup/prove of big
    circuits take seconds to minutes): `with rich_progress() as cb: prove(..., progress=cb)`."""
    from rich.progress import Progress as RichProgress
    from rich.progress import TaskID

    with RichProgress(transient=transient) as bar:
        tasks: dict[str, TaskID] = {}

        def callback(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=max(total, 1))
            bar.update(tasks[stage], completed=done, total=max(total, 1))

        yield callback


def _tick(progress: Progress | None, stage: str, done: int, total: int) -> None:
    pause_point()
    if progress is not None:
        progress(stage, done, total)


# ---------------------------------------------------------------- setup


def _lagrange_at(tau: mpz, n: int) -> list[mpz]:
    """L_j(tau) for the n-domain: (tau^n - 1)/n * w^j / (tau - w^j)."""
    w = mpz(root_of_unity(n))
    pts: list[mpz] = []
    acc = mpz(1)
    for _ in range(n):
        pts.append(acc)
        acc = acc * w % _R
    invs = batch_inverse_mpz([(tau - x) % _R for x in pts])
    z = (pow(tau, n, _R) - 1) * inverse(n) % _R
    return [z * x % _R * i % _R for x, i in zip(pts, invs, strict=True)]


def setup(
    r1cs: R1CS, *, progress: Progress | None = None, processes: int = 2
) -> tuple[ProvingKey, VerifyingKey]:
    """A fresh key pair for `r1cs`; the toxic waste never leaves this function."""
    n = domain_size(r1cs)
    m, npub, ncons = r1cs.n_wires, r1cs.n_public, r1cs.n_constraints
    while True:
        tau = mpz(_rand_nonzero())
        # tau must avoid the domain and the odd coset (Lagrange formulas divide by tau - x).
        if pow(tau, 2 * n, _R) != 1:
            break
    alpha, beta, gamma, delta = (mpz(_rand_nonzero()) for _ in range(4))

    _tick(progress, "setup:qap", 0, ncons)
    lag = _lagrange_at(tau, n)
    u = [mpz(0)] * m
    v = [mpz(0)] * m
    w = [mpz(0)] * m
    for j, con in enumerate(r1cs.constraints):
        lj = lag[j]
        for wire, coef in con.a:
            u[wire] += coef * lj
        for wire, coef in con.b:
            v[wire] += coef * lj
        for wire, coef in con.c:
            w[wire] += coef * lj
    for i in range(npub + 1):
        u[i] += lag[ncons + i]
    u = [x % _R for x in u]
    v = [x % _R for x in v]
    w = [x % _R for x in w]
    _tick(progress, "setup:qap", ncons, ncons)

    inv_gamma, inv_delta = mpz(inverse(int(gamma))), mpz(inverse(int(delta)))
    k_all = [(beta * a + alpha * b + c) % _R for a, b, c in zip(u, v, w, strict=True)]
    ic_sc = [k * inv_gamma % _R for k in k_all[: npub + 1]]
    c_sc = [k * inv_delta % _R for k in k_all[npub + 1 :]]
    # Odd points of the 2n-domain: L^(2n)_(2k+1)(tau) / delta.
    w2 = mpz(odd_coset_shift(n))
    w2sq = w2 * w2 % _R
    odd: list[mpz] = []
    x = w2
    for _ in range(n):
        odd.append(x)
        x = x * w2sq % _R
    z2 = (pow(tau, 2 * n, _R) - 1) * inverse(2 * n) % _R * inv_delta % _R
    h_sc = [
        z2 * p % _R * q % _R
        for p, q in zip(odd, batch_inverse_mpz([(tau - p) % _R for p in odd]), strict=True)
    ]

    g1_scalars = [int(s) for s in (*u, *v, *ic_sc, *c_sc, *h_sc, alpha, beta, delta)]
    g2_scalars = [int(s) for s in (*v, beta, gamma, delta)]
    del tau, alpha, beta, gamma, delta, inv_gamma, inv_delta, lag, u, v, w, k_all, ic_sc, c_sc, h_sc

    def g1_part(_: Channel) -> list[G1Point]:
        return fixed_base_mul(
            G1,
            G1_GENERATOR,
            g1_scalars,
            progress=(lambda d, t: _tick(progress, "setup:g1", d, t)) if progress else None,
        )

    def g2_part(_: Channel) -> list[G2Point]:
        return fixed_base_mul(G2, G2_GENERATOR, g2_scalars)

    g1_pts, g2_pts = run_parallel(g1_part, g2_part, processes=processes)
    g1_scalars.clear()
    g2_scalars.clear()
    _tick(progress, "setup:g2", 1, 1)

    it = iter(g1_pts)
    a_q = tuple(next(it) for _ in range(m))
    b1_q = tuple(next(it) for _ in range(m))
    ic = tuple(next(it) for _ in range(npub + 1))
    c_q = tuple(next(it) for _ in range(m - npub - 1))
    h_q = tuple(next(it) for _ in range(n))
    alpha1, beta1, delta1 = next(it), next(it), next(it)
    b2_q = tuple(g2_pts[:m])
    beta2, gamma2, delta2 = g2_pts[m:]
    pk = ProvingKey(
        circuit_digest=r1cs.digest(),
        n_wires=m,
        n_public=npub,
        n_constraints=ncons,
        domain_size=n,
        alpha1=alpha1,
        beta1=beta1,
        beta2=beta2,
        delta1=delta1,
        delta2=delta2,
        a_query=a_q,
        b1_query=b1_q,
        b2_query=b2_q,
        c_query=c_q,
        h_query=h_q,
    )
    vk = VerifyingKey(alpha1=alpha1, beta2=beta2, gamma2=gamma2, delta2=delta2, ic=ic)
    return pk, vk


# ---------------------------------------------------------------- prove


@dataclass(frozen=True, slots=True)
class _Prepared:
    a: PointArrays
    b1: PointArrays
    b2: PointArrays
    c: PointArrays
    h: PointArrays


# Prepared (gmpy2, column-major) copies of proving keys, by identity: hashing a key by
# value would hash every point on each prove.
_prepared: dict[int, tuple[weakref.ref[ProvingKey], _Prepared]] = {}


def _prepare(pk: ProvingKey) -> _Prepared:
    hit = _prepared.get(id(pk))
    if hit is not None and hit[0]() is pk:
        return hit[1]
    got = _Prepared(
        PointArrays.build(G1, pk.a_query),
        PointArrays.build(G1, pk.b1_query),
        PointArrays.build(G2, pk.b2_query),
        PointArrays.build(G1, pk.c_query),
        PointArrays.build(G1, pk.h_query),
    )
    key = id(pk)
    _prepared[key] = (weakref.ref(pk, lambda _: _prepared.pop(key, None)), got)
    return got


def _abc_evals(pk: ProvingKey, r1cs: R1CS, w: list[mpz]) -> tuple[list[mpz], list[mpz], list[mpz]]:
    """A, B, C of the QAP on the domain; checks every constraint on the way."""
    n = pk.domain_size
    zero = mpz(0)
    a = [zero] * n
    b = [zero] * n
    c = [zero] * n
    for j, con in enumerate(r1cs.constraints):
        va = zero
        for wire, coef in con.a:
            va += coef * w[wire]
        vb = zero
        for wire, coef in con.b:
            vb += coef * w[wire]
        vc = zero
        for wire, coef in con.c:
            vc += coef * w[wire]
        va, vb, vc = va % _R, vb % _R, vc % _R
        if va * vb % _R != vc:
            raise WitnessError(
                f"witness violates constraint {j} of {r1cs.name or 'the circuit'}", j
            )
        a[j], b[j], c[j] = va, vb, vc
    for i in range(pk.n_public + 1):
        a[r1cs.n_constraints + i] = w[i]
    return a, b, c


def prove(
    pk: ProvingKey,
    r1cs: R1CS,
    witness: Sequence[int],
    *,
    progress: Progress | None = None,
    processes: int = 2,
) -> Proof:
    """A zero-knowledge proof that `witness` satisfies `r1cs` (checked first)."""
    cpu_start = time.process_time()
    if (pk.n_wires, pk.n_public, pk.n_constraints) != (
        r1cs.n_wires,
        r1cs.n_public,
        r1cs.n_constraints,
    ):
        raise KeyMismatchError(
            f"proving key is for {pk.n_wires} wires / {pk.n_public} public / {pk.n_constraints} "
            f"constraints, circuit has {r1cs.n_wires} / {r1cs.n_public} / {r1cs.n_constraints}"
        )
    if len(witness) != r1cs.n_wires:
        raise WitnessError(f"witness has {len(witness)} values, circuit has {r1cs.n_wires} wires")
    w = [mpz(int(x) % R) for x in witness]
    if w[0] != 1:
        raise WitnessError("witness[0] must be 1 (the constant wire)")
    _tick(progress, "prove:witness", 0, 1)
    a_ev, b_ev, c_ev = _abc_evals(pk, r1cs, w)
    _tick(progress, "prove:witness", 1, 1)
    prep = _prepare(pk)
    npub = pk.n_public
    max_bits = max((int(x).bit_length() for x in w), default=1)
    window = _window_bits(len(w), max_bits)
    digits = signed_digits(w, window, -(-(max_bits + 1) // window))
    wl = [int(x) for x in w]

    # Work split between this process and the helper, in units of one batched G1
    # addition: an MSM costs about one addition per nonzero digit (G2: G2.cost times
    # that), an NTT butterfly about a fifth. The helper takes B2 and B1, this process A,
    # C and the FFTs; the H query, whose scalars exist only after the FFTs, is cut where
    # the two sides balance and the helper's share of scalars is sent to it.
    nnz = np.count_nonzero(digits, axis=1)
    n = pk.domain_size
    h_windows = -(-(R.bit_length() + 1) // _window_bits(n, R.bit_length()))
    h_total = n * h_windows * 1.1
    here_cost = nnz[prep.a.index].sum() + nnz[prep.c.index + npub + 1].sum()
    here_cost += 6 * 0.2 * (n // 2) * n.bit_length()
    there_cost = G2.cost * nnz[prep.b2.index].sum() + nnz[prep.b1.index].sum()
    h_here = min(max((there_cost + h_total - here_cost) / 2, 0.0), h_total)
    cut = len(prep.h) if processes < 2 else int(len(prep.h) * h_here / h_total)
    h_mine, h_theirs = prep.h.split(cut)

    def helper(chan: Channel) -> tuple[G2Point, G1Point, G1Point, float, float]:
        t0 = time.process_time()
        pb2 = msm(G2, prep.b2, wl, digits, window)
        pb1 = msm(G1, prep.b1, wl, digits, window)
        t1 = time.process_time()
        h_scalars = chan.recv()
        return pb2, pb1, msm(G1, h_theirs, h_scalars), t1 - t0, time.process_time() - t0

    def main(chan: Channel) -> tuple[G1Point, G1Point, G1Point]:
        _tick(progress, "prove:msm_a", 0, 1)
        pa = msm(G1, prep.a, wl, digits, window)
        _tick(progress, "prove:msm_c", 0, 1)
        pc = msm(G1, prep.c, wl[npub + 1 :], digits[npub + 1 :], window)
        _tick(progress, "prove:fft", 0, 3)
        a_odd = odd_coset_from_evals(a_ev)
        _tick(progress, "prove:fft", 1, 3)
        b_odd = odd_coset_from_evals(b_ev)
        _tick(progress, "prove:fft", 2, 3)
        c_odd = odd_coset_from_evals(c_ev)
        _tick(progress, "prove:fft", 3, 3)
        h = [int((x * y - z) % _R) for x, y, z in zip(a_odd, b_odd, c_odd, strict=True)]
        # msm indexes scalars by original position: the helper gets zeros before the cut.
        chan.send([0] * cut + h[cut:])
        _tick(progress, "prove:msm_h", 0, 1)
        ph = msm(G1, h_mine, h)
        return pa, pc, ph

    t_fork = time.process_time()
    (pa, pc, ph), (pb2, pb1, ph2, helper_fixed, helper_cpu) = run_parallel(
        main, helper, processes=processes
    )
    ph = g1_add(ph, ph2)
    LAST_PROVE_STATS.clear()
    LAST_PROVE_STATS.update(
        main_cpu_s=time.process_time() - cpu_start,
        parallel_main_cpu_s=time.process_time() - t_fork,
        helper_cpu_s=helper_cpu,
        helper_b_cpu_s=helper_fixed,
        h_cut=cut,
        h_points=len(prep.h),
        est_here=float(here_cost),
        est_there=float(there_cost),
    )
    _tick(progress, "prove:done", 1, 1)

    r, s = _rand_nonzero(), _rand_nonzero()
    proof_a = g1_add(g1_add(pk.alpha1, pa), g1_mul(pk.delta1, r))
    proof_b = g2_add(g2_add(pk.beta2, pb2), g2_mul(pk.delta2, s))
    b1 = g1_add(g1_add(pk.beta1, pb1), g1_mul(pk.delta1, s))
    proof_c = g1_add(pc, ph)
    proof_c = g1_add(proof_c, g1_mul(proof_a, s))
    proof_c = g1_add(proof_c, g1_mul(b1, r))
    proof_c = g1_add(proof_c, g1_neg(g1_mul(pk.delta1, r * s % R)))
    return Proof(proof_a, proof_b, proof_c)


# ---------------------------------------------------------------- verify


def verify(vk: VerifyingKey, public_inputs: Sequence[int], proof: Proof) -> bool:
    """e(A, B) = e(alpha, beta) e(sum x_i IC_i, gamma) e(C, delta), via py_ecc.

    Rejects (False) malformed proofs: points off the curve, B outside the order-r subgroup,
    public inputs not in [0, r), wrong number of inputs.
    """
    if len(public_inputs) != vk.n_public:
        return False
    if any(not 0 <= int(x) < R for x in public_inputs):
        return False
    if not (g1_is_on_curve(proof.a) and g1_is_on_curve(proof.c) and g2_in_subgroup(proof.b)):
        return False
    if proof.a is None or proof.b is None:
        return False
    vk_x = vk.ic[0]
    for x, pt in zip(public_inputs, vk.ic[1:], strict=True):
        vk_x = g1_add(vk_x, g1_mul(pt, int(x)))
    f = ob.FQ12.one()
    for g2, g1 in (
        (proof.b, g1_neg(proof.a)),
        (vk.beta2, vk.alpha1),
        (vk.gamma2, vk_x),
        (vk.delta2, proof.c),
    ):
        if g1 is None or g2 is None:
            continue
        f = f * ob.pairing(g2_to_optimized(g2), g1_to_optimized(g1), final_exponentiate=False)
    return bool(ob.final_exponentiate(f) == ob.FQ12.one())


# ---------------------------------------------------------------- key cache


def _cache_dir(cache_dir: str | os.PathLike[str] | None) -> Path:
    if cache_dir is not None:
        return Path(cache_dir)
    env = os.environ.get(CACHE_ENV)
    return Path(env) if env else DEFAULT_CACHE_DIR


def _pack_points(points: Sequence[Any], width: int) -> bytes:
    zero = bytes(32 * width)
    return b"".join(
        zero if p is None else b"".join(int(c).to_bytes(32, "big") for c in p) for p in points
    )


def _unpack_points(blob: bytes, count: int, width: int, offset: int) -> tuple[tuple[Any, ...], int]:
    out: list[Any] = []
    size = 32 * width
    for i in range(count):
        chunk = blob[offset + i * size : offset + (i + 1) * size]
        coords = tuple(int.from_bytes(chunk[k : k + 32], "big") for k in range(0, size, 32))
        out.append(None if not any(coords) else coords)
    return tuple(out), offset + count * size


_G1_FIELDS = ("alpha1", "beta1", "delta1")
_G2_FIELDS = ("beta2", "delta2")
_KEY_FORMAT = "crossbook-groth16-bn254-v1"


def save_keys(path: Path, pk: ProvingKey, vk: VerifyingKey) -> None:
    """Binary key file: a JSON header line, then 32-byte big-endian coordinates
    ((0, 0...) for infinity). Written atomically."""
    header = {
        "format": _KEY_FORMAT,
        "digest": pk.circuit_digest,
        "n_wires": pk.n_wires,
        "n_public": pk.n_public,
        "n_constraints": pk.n_constraints,
        "domain_size": pk.domain_size,
        "created": int(time.time()),
    }
    g1_single = [getattr(pk, f) for f in _G1_FIELDS] + [vk.alpha1]
    g2_single = [getattr(pk, f) for f in _G2_FIELDS] + [vk.beta2, vk.gamma2, vk.delta2]
    body = b"".join(
        (
            _pack_points(g1_single, 2),
            _pack_points(g2_single, 4),
            _pack_points(vk.ic, 2),
            _pack_points(pk.a_query, 2),
            _pack_points(pk.b1_query, 2),
            _pack_points(pk.b2_query, 4),
            _pack_points(pk.c_query, 2),
            _pack_points(pk.h_query, 2),
        )
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_bytes(json.dumps(header).encode() + b"\n" + body)
    os.replace(tmp, path)


def load_keys(path: Path) -> tuple[ProvingKey, VerifyingKey]:
    blob = path.read_bytes()
    nl = blob.index(b"\n")
    h = json.loads(blob[:nl])
    if h.get("format") != _KEY_FORMAT:
        raise Groth16Error(f"{path}: not a {_KEY_FORMAT} key file")
    m, npub, n = h["n_wires"], h["n_public"], h["domain_size"]
    off = nl + 1
    g1s, off = _unpack_points(blob, 4, 2, off)
    g2s, off = _unpack_points(blob, 5, 4, off)
    ic, off = _unpack_points(blob, npub + 1, 2, off)
    a_q, off = _unpack_points(blob, m, 2, off)
    b1_q, off = _unpack_points(blob, m, 2, off)
    b2_q, off = _unpack_points(blob, m, 4, off)
    c_q, off = _unpack_points(blob, m - npub - 1, 2, off)
    h_q, off = _unpack_points(blob, n, 2, off)
    if off != len(blob):
        raise Groth16Error(f"{path}: truncated or oversized key file")
    pk = ProvingKey(
        circuit_digest=h["digest"],
        n_wires=m,
        n_public=npub,
        n_constraints=h["n_constraints"],
        domain_size=n,
        alpha1=g1s[0],
        beta1=g1s[1],
        delta1=g1s[2],
        beta2=g2s[0],
        delta2=g2s[1],
        a_query=a_q,
        b1_query=b1_q,
        b2_query=b2_q,
        c_query=c_q,
        h_query=h_q,
    )
    vk = VerifyingKey(alpha1=g1s[3], beta2=g2s[2], gamma2=g2s[3], delta2=g2s[4], ic=ic)
    return pk, vk


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def load_or_setup(
    r1cs: R1CS, cache_dir: str | os.PathLike[str] | None = None, *, progress: Progress | None = None
) -> tuple[ProvingKey, VerifyingKey]:
    """Keys for `r1cs` from `cache_dir` (default $CROSSBOOK_ZK_CACHE or the repository's var/zk-keys/),
    made by `setup` and stored there on a miss. A file lock makes concurrent callers share
    one setup instead of racing to write two different keys."""
    digest = r1cs.digest()
    path = _cache_dir(cache_dir) / f"{digest}.g16"
    with _locked(path.with_suffix(".lock")):
        if path.exists():
            pk, vk = load_keys(path)
            if pk.circuit_digest != digest:
                raise KeyMismatchError(f"{path} holds keys for circuit {pk.circuit_digest}")
            return pk, vk
        pk, vk = setup(r1cs, progress=progress)
        save_keys(path, pk, vk)
        return pk, vk
