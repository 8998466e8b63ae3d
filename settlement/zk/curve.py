"""BN254 G1 and G2 on raw integers: affine points, batch-affine addition, py_ecc bridges.

G1 is y^2 = x^3 + 3 over Fq; G2 is the sextic twist y^2 = x^3 + 3/(9+u) over
Fq2 = Fq[u]/(u^2+1). Points are plain tuples so that they pickle, hash and compare
cheaply: a G1 point is `(x, y)`, a G2 point is `(x0, x1, y0, y1)` meaning
x = x0 + x1*u, y = y0 + y1*u, and the point at infinity is `None` in both groups.

Why affine everywhere: with gmpy2 an Fq inversion costs ~1.1 us, about six
multiplications, so the classical reason for Jacobian coordinates mostly disappears, and
*batches* of independent additions (MSM buckets, fixed-base tables) share one inversion
through Montgomery's trick. An affine addition in a batch then costs 6 Fq multiplications
(G1) or 17 (G2), against 11 / ~30 for a mixed Jacobian addition, and no normalisation at
the end. `g1_add_pairs` / `g2_add_pairs` are those batched additions; the exceptional
cases (equal x: doubling or P + (-P)) are detected and done one by one.

Conversion helpers move points to and from py_ecc's `bn128` (affine FQ/FQ2 tuples) and
`optimized_bn128` (projective) types; pairings are left to py_ecc.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gmpy2
from gmpy2 import mpz
from py_ecc import bn128, optimized_bn128

from settlement.zk.constants import FIELD_MODULUS, SCALAR_FIELD

__all__ = [
    "G1_GENERATOR",
    "G2_B",
    "G2_GENERATOR",
    "G1Point",
    "G2Point",
    "g1_add",
    "g1_add_pairs",
    "g1_double",
    "g1_from_py_ecc",
    "g1_is_on_curve",
    "g1_mul",
    "g1_neg",
    "g1_to_optimized",
    "g1_to_py_ecc",
    "g2_add",
    "g2_add_pairs",
    "g2_double",
    "g2_from_py_ecc",
    "g2_in_subgroup",
    "g2_is_on_curve",
    "g2_mul",
    "g2_neg",
    "g2_to_optimized",
    "g2_to_py_ecc",
]

Q = FIELD_MODULUS
_P = mpz(Q)
_ZERO = mpz(0)
_ONE = mpz(1)

G1Point = tuple[int, int] | None
G2Point = tuple[int, int, int, int] | None

G1_GENERATOR: tuple[int, int] = (1, 2)
G2_GENERATOR: tuple[int, int, int, int] = (
    10857046999023057135944570762232829481370756359578518086990519993285655852781,
    11559732032986387107991004021392285783925812861821192530917403151452391805634,
    8495653923123431417604973247489272438418190587263600148770280649306958101930,
    4082367875863433681332203403145435568316851327593401208105741076214120093531,
)

# 3 / (9 + u) = 3 (9 - u) / 82
_INV82 = pow(82, -1, Q)
G2_B: tuple[int, int] = (27 * _INV82 % Q, (-3) * _INV82 % Q)


def _inv(a: Any) -> mpz:
    return gmpy2.invert(a, _P)


# ---------------------------------------------------------------- G1, one point at a time


def g1_is_on_curve(p: G1Point) -> bool:
    if p is None:
        return True
    x, y = p
    return 0 <= x < Q and 0 <= y < Q and (y * y - x * x * x - 3) % Q == 0


def g1_neg(p: G1Point) -> G1Point:
    return None if p is None else (p[0], (-p[1]) % Q)


def g1_double(p: G1Point) -> G1Point:
    if p is None or p[1] == 0:
        return None
    x, y = mpz(p[0]), mpz(p[1])
    lam = 3 * x * x * _inv(2 * y) % _P
    x3 = (lam * lam - 2 * x) % _P
    return int(x3), int((lam * (x - x3) - y) % _P)


def g1_add(p: G1Point, q: G1Point) -> G1Point:
    if p is None:
        return q
    if q is None:
        return p
    if p[0] == q[0]:
        return g1_double(p) if p[1] == q[1] else None
    x1, y1, x2, y2 = mpz(p[0]), mpz(p[1]), mpz(q[0]), mpz(q[1])
    lam = (y2 - y1) * _inv(x2 - x1) % _P
    x3 = (lam * lam - x1 - x2) % _P
    return int(x3), int((lam * (x1 - x3) - y1) % _P)


def g1_mul(p: G1Point, k: int) -> G1Point:
    """k * p by double-and-add (single points only; use msm.py for many)."""
    k %= SCALAR_FIELD
    acc: G1Point = None
    for bit in bin(k)[2:] if k else "":
        acc = g1_double(acc)
        if bit == "1":
            acc = g1_add(acc, p)
    return acc


def g1_add_pairs(
    x1: Sequence[mpz], y1: Sequence[mpz], x2: Sequence[mpz], y2: Sequence[mpz]
) -> tuple[list[mpz], list[mpz], list[int]]:
    """(x1, y1)_i + (x2, y2)_i for all i with one inversion: returns x3, y3 and the indices
    whose sum is the point at infinity (their coordinates are placeholders)."""
    dx = [b - a for a, b in zip(x1, x2, strict=True)]
    if 0 in dx:  # equal x somewhere: doubling or P + (-P), rare
        return _g1_add_pairs_general(x1, y1, x2, y2, dx)
    p = _P
    n = len(dx)
    prefix: list[mpz] = [_ONE] * n
    acc = _ONE
    for i, d in enumerate(dx):
        prefix[i] = acc
        acc = acc * d % p
    inv = gmpy2.invert(acc, p)
    x3: list[mpz] = []
    y3: list[mpz] = []
    put_x, put_y = x3.append, y3.append
    # Backwards over zipped iterators (no indexing), one reduction for lambda: each gmpy2
    # operation costs ~60 ns of overhead, more than the extra limbs of a wider product.
    for d, pre, a, b, ya, yb in zip(
        reversed(dx),
        reversed(prefix),
        reversed(x1),
        reversed(x2),
        reversed(y1),
        reversed(y2),
        strict=True,
    ):
        lam = (yb - ya) * inv * pre % p
        inv = inv * d % p
        x = (lam * lam - a - b) % p
        put_x(x)
        put_y((lam * (a - x) - ya) % p)
    x3.reverse()
    y3.reverse()
    return x3, y3, []


def _g1_add_pairs_general(
    x1: Sequence[mpz], y1: Sequence[mpz], x2: Sequence[mpz], y2: Sequence[mpz], dx: list[mpz]
) -> tuple[list[mpz], list[mpz], list[int]]:
    p = _P
    n = len(x1)
    prefix: list[mpz] = [_ZERO] * n
    acc = _ONE
    special: list[int] = []
    for i in range(n):
        d = dx[i]
        prefix[i] = acc
        if d:
            acc = acc * d % p
        else:
            special.append(i)
    inv = gmpy2.invert(acc, p)
    x3: list[mpz] = [_ZERO] * n
    y3: list[mpz] = [_ZERO] * n
    for i in range(n - 1, -1, -1):
        d = dx[i]
        if d:
            a = x1[i]
            lam = (y2[i] - y1[i]) * (inv * prefix[i] % p) % p
            inv = inv * d % p
            x = (lam * lam - a - x2[i]) % p
            x3[i] = x
            y3[i] = (lam * (a - x) - y1[i]) % p
    infinite: list[int] = []
    for i in special:
        r = g1_add((int(x1[i]), int(y1[i])), (int(x2[i]), int(y2[i])))
        if r is None:
            infinite.append(i)
        else:
            x3[i], y3[i] = mpz(r[0]), mpz(r[1])
    return x3, y3, infinite


# ---------------------------------------------------------------- Fq2 and G2


def _f2_mul(a0: Any, a1: Any, b0: Any, b1: Any) -> tuple[mpz, mpz]:
    return (a0 * b0 - a1 * b1) % _P, (a0 * b1 + a1 * b0) % _P


def _f2_inv(a0: Any, a1: Any) -> tuple[mpz, mpz]:
    t = _inv(a0 * a0 + a1 * a1)
    return a0 * t % _P, -a1 * t % _P


def g2_is_on_curve(p: G2Point) -> bool:
    if p is None:
        return True
    if not all(0 <= c < Q for c in p):
        return False
    x0, x1, y0, y1 = (mpz(c) for c in p)
    yy = _f2_mul(y0, y1, y0, y1)
    xx = _f2_mul(x0, x1, x0, x1)
    xxx = _f2_mul(xx[0], xx[1], x0, x1)
    return (yy[0] - xxx[0] - G2_B[0]) % _P == 0 and (yy[1] - xxx[1] - G2_B[1]) % _P == 0


def g2_neg(p: G2Point) -> G2Point:
    return None if p is None else (p[0], p[1], (-p[2]) % Q, (-p[3]) % Q)


def g2_double(p: G2Point) -> G2Point:
    if p is None or (p[2] == 0 and p[3] == 0):
        return None
    x0, x1, y0, y1 = (mpz(c) for c in p)
    n0, n1 = _f2_mul(x0, x1, x0, x1)
    d0, d1 = _f2_inv(2 * y0, 2 * y1)
    l0, l1 = _f2_mul(3 * n0, 3 * n1, d0, d1)
    s0, s1 = _f2_mul(l0, l1, l0, l1)
    rx0, rx1 = (s0 - 2 * x0) % _P, (s1 - 2 * x1) % _P
    t0, t1 = _f2_mul(l0, l1, x0 - rx0, x1 - rx1)
    return int(rx0), int(rx1), int((t0 - y0) % _P), int((t1 - y1) % _P)


def g2_add(p: G2Point, q: G2Point) -> G2Point:
    if p is None:
        return q
    if q is None:
        return p
    if p[0] == q[0] and p[1] == q[1]:
        return g2_double(p) if p[2] == q[2] and p[3] == q[3] else None
    x0, x1, y0, y1 = (mpz(c) for c in p)
    u0, u1, v0, v1 = (mpz(c) for c in q)
    d0, d1 = _f2_inv(u0 - x0, u1 - x1)
    l0, l1 = _f2_mul(v0 - y0, v1 - y1, d0, d1)
    s0, s1 = _f2_mul(l0, l1, l0, l1)
    rx0, rx1 = (s0 - x0 - u0) % _P, (s1 - x1 - u1) % _P
    t0, t1 = _f2_mul(l0, l1, x0 - rx0, x1 - rx1)
    return int(rx0), int(rx1), int((t0 - y0) % _P), int((t1 - y1) % _P)


def _g2_mul_raw(p: G2Point, k: int) -> G2Point:
    acc: G2Point = None
    for bit in bin(k)[2:] if k else "":
        acc = g2_double(acc)
        if bit == "1":
            acc = g2_add(acc, p)
    return acc


def g2_mul(p: G2Point, k: int) -> G2Point:
    return _g2_mul_raw(p, k % SCALAR_FIELD)


def g2_in_subgroup(p: G2Point) -> bool:
    """On the twist and of order r (the twist has a large cofactor, so this matters)."""
    return g2_is_on_curve(p) and _g2_mul_raw(p, SCALAR_FIELD) is None


def g2_add_pairs(
    x1a: Sequence[mpz],
    x1b: Sequence[mpz],
    y1a: Sequence[mpz],
    y1b: Sequence[mpz],
    x2a: Sequence[mpz],
    x2b: Sequence[mpz],
    y2a: Sequence[mpz],
    y2b: Sequence[mpz],
) -> tuple[list[mpz], list[mpz], list[mpz], list[mpz], list[int]]:
    """Batched G2 additions; the shared inversion is of the Fq norms of the x differences
    (1/(a + bu) = (a - bu) / (a^2 + b^2), and a^2 + b^2 = 0 only for a = b = 0 since
    -1 is a non-residue mod q)."""
    p = _P
    da = [b - a for a, b in zip(x1a, x2a, strict=True)]
    db = [b - a for a, b in zip(x1b, x2b, strict=True)]
    norms = [(a * a + b * b) % p for a, b in zip(da, db, strict=True)]
    if 0 in norms:  # equal x somewhere: doubling or P + (-P), rare
        return _g2_add_pairs_general(x1a, x1b, y1a, y1b, x2a, x2b, y2a, y2b, da, db, norms)
    n = len(norms)
    prefix: list[mpz] = [_ONE] * n
    acc = _ONE
    for i, d in enumerate(norms):
        prefix[i] = acc
        acc = acc * d % p
    inv = gmpy2.invert(acc, p)
    ra: list[mpz] = []
    rb: list[mpz] = []
    sa: list[mpz] = []
    sb: list[mpz] = []
    rev = reversed
    for d, pre, a, b, ya, yb, va, vb, xa, xb, ua, ub in zip(
        rev(norms),
        rev(prefix),
        rev(da),
        rev(db),
        rev(y1a),
        rev(y1b),
        rev(y2a),
        rev(y2b),
        rev(x1a),
        rev(x1b),
        rev(x2a),
        rev(x2b),
        strict=True,
    ):
        ninv = inv * pre % p
        inv = inv * d % p
        ea, eb = va - ya, vb - yb
        # lambda = (ea + eb u)(a - b u) / norm
        l0 = (ea * a + eb * b) * ninv % p
        l1 = (eb * a - ea * b) * ninv % p
        rx0 = ((l0 + l1) * (l0 - l1) - xa - ua) % p
        rx1 = (2 * l0 * l1 - xb - ub) % p
        ta, tb = xa - rx0, xb - rx1
        ra.append(rx0)
        rb.append(rx1)
        sa.append((l0 * ta - l1 * tb - ya) % p)
        sb.append((l0 * tb + l1 * ta - yb) % p)
    ra.reverse()
    rb.reverse()
    sa.reverse()
    sb.reverse()
    return ra, rb, sa, sb, []


def _g2_add_pairs_general(
    x1a: Sequence[mpz],
    x1b: Sequence[mpz],
    y1a: Sequence[mpz],
    y1b: Sequence[mpz],
    x2a: Sequence[mpz],
    x2b: Sequence[mpz],
    y2a: Sequence[mpz],
    y2b: Sequence[mpz],
    da: list[mpz],
    db: list[mpz],
    norms: list[mpz],
) -> tuple[list[mpz], list[mpz], list[mpz], list[mpz], list[int]]:
    p = _P
    n = len(norms)
    prefix: list[mpz] = [_ZERO] * n
    acc = _ONE
    special: list[int] = []
    for i in range(n):
        d = norms[i]
        prefix[i] = acc
        if d:
            acc = acc * d % p
        else:
            special.append(i)
    inv = gmpy2.invert(acc, p)
    ra: list[mpz] = [_ZERO] * n
    rb: list[mpz] = [_ZERO] * n
    sa: list[mpz] = [_ZERO] * n
    sb: list[mpz] = [_ZERO] * n
    for i in range(n - 1, -1, -1):
        d = norms[i]
        if not d:
            continue
        ninv = inv * prefix[i] % p
        inv = inv * d % p
        a, b = da[i], db[i]
        ea, eb = y2a[i] - y1a[i], y2b[i] - y1b[i]
        # lambda = (ea + eb u)(a - b u) / norm
        l0 = (ea * a + eb * b) * ninv % p
        l1 = (eb * a - ea * b) * ninv % p
        xa, xb = x1a[i], x1b[i]
        rx0 = ((l0 + l1) * (l0 - l1) - xa - x2a[i]) % p
        rx1 = (2 * l0 * l1 - xb - x2b[i]) % p
        ta, tb = xa - rx0, xb - rx1
        ra[i] = rx0
        rb[i] = rx1
        sa[i] = (l0 * ta - l1 * tb - y1a[i]) % p
        sb[i] = (l0 * tb + l1 * ta - y1b[i]) % p
    infinite: list[int] = []
    for i in special:
        r = g2_add(
            (int(x1a[i]), int(x1b[i]), int(y1a[i]), int(y1b[i])),
            (int(x2a[i]), int(x2b[i]), int(y2a[i]), int(y2b[i])),
        )
        if r is None:
            infinite.append(i)
        else:
            ra[i], rb[i], sa[i], sb[i] = (mpz(c) for c in r)
    return ra, rb, sa, sb, infinite


# ---------------------------------------------------------------- py_ecc bridges


def g1_to_py_ecc(p: G1Point) -> Any:
    return None if p is None else (bn128.FQ(p[0]), bn128.FQ(p[1]))


def g1_from_py_ecc(p: Any) -> G1Point:
    """Accepts bn128 affine points or optimized_bn128 projective ones."""
    if p is None:
        return None
    if len(p) == 3:
        if optimized_bn128.is_inf(p):
            return None
        p = optimized_bn128.normalize(p)
    return int(p[0]), int(p[1])


def g1_to_optimized(p: G1Point) -> Any:
    if p is None:
        return optimized_bn128.Z1
    return (optimized_bn128.FQ(p[0]), optimized_bn128.FQ(p[1]), optimized_bn128.FQ.one())


def g2_to_py_ecc(p: G2Point) -> Any:
    if p is None:
        return None
    return (bn128.FQ2([p[0], p[1]]), bn128.FQ2([p[2], p[3]]))


def g2_from_py_ecc(p: Any) -> G2Point:
    if p is None:
        return None
    if len(p) == 3:
        if optimized_bn128.is_inf(p):
            return None
        p = optimized_bn128.normalize(p)
    x, y = p
    return int(x.coeffs[0]), int(x.coeffs[1]), int(y.coeffs[0]), int(y.coeffs[1])


def g2_to_optimized(p: G2Point) -> Any:
    if p is None:
        return optimized_bn128.Z2
    fq2 = optimized_bn128.FQ2
    return (fq2([p[0], p[1]]), fq2([p[2], p[3]]), fq2.one())
