"""The scalar field Fr of BN254: inversion, batch inversion and roots of unity.

Circuit values, witnesses and QAP polynomials live in Fr. Two facts drive this module:

- inversion is ~100x a multiplication, so many inverses are taken at once with
  Montgomery's trick (one inversion plus three multiplications per element);
- the FFT domains must be *exactly* the ones snarkjs uses, because an exported proving key
  stores the H query over a specific coset. ffjavascript picks the smallest quadratic
  non-residue g >= 2, sets w[s] = g^t with r - 1 = 2^s * t, and w[k-1] = w[k]^2; we do the
  same, so `root_of_unity(2^k)` is bit-for-bit its `Fr.w[k]`.

Arithmetic uses gmpy2 `mpz` internally (about 2.5x faster than int for 254-bit mulmod);
public functions take and return plain ints.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from functools import lru_cache

import gmpy2
from gmpy2 import mpz

from settlement.zk.constants import SCALAR_FIELD

__all__ = [
    "TWO_ADICITY",
    "R",
    "batch_inverse",
    "batch_inverse_mpz",
    "inverse",
    "nonresidue",
    "root_of_unity",
]

R = SCALAR_FIELD
_R = mpz(R)


def _two_adicity(r: int) -> tuple[int, int]:
    s, t = 0, r - 1
    while t % 2 == 0:
        s, t = s + 1, t // 2
    return s, t


TWO_ADICITY, _ODD_PART = _two_adicity(R)


def inverse(a: int) -> int:
    """a^-1 mod r; ZeroDivisionError for a ≡ 0."""
    a %= R
    if a == 0:
        raise ZeroDivisionError("inverse of zero in Fr")
    return int(gmpy2.invert(a, _R))


def batch_inverse_mpz(values: Sequence[mpz], modulus: mpz = _R) -> list[mpz]:
    """Montgomery's trick over any prime modulus; every value must be nonzero mod it."""
    n = len(values)
    if n == 0:
        return []
    prefix: list[mpz] = [mpz(0)] * n
    acc = mpz(1)
    for i, v in enumerate(values):
        prefix[i] = acc
        acc = acc * v % modulus
    if acc == 0:
        raise ZeroDivisionError("batch inverse of a zero element")
    inv = gmpy2.invert(acc, modulus)
    out: list[mpz] = [mpz(0)] * n
    for i in range(n - 1, -1, -1):
        out[i] = inv * prefix[i] % modulus
        inv = inv * values[i] % modulus
    return out


def batch_inverse(values: Iterable[int]) -> list[int]:
    """Inverses of many nonzero Fr elements with a single field inversion."""
    vals = [mpz(v % R) for v in values]
    return [int(x) for x in batch_inverse_mpz(vals)]


@lru_cache(maxsize=1)
def nonresidue() -> int:
    """The smallest quadratic non-residue >= 2 (ffjavascript's `nqr`; 5 for BN254 Fr)."""
    g = 2
    while pow(g, (R - 1) // 2, R) != R - 1:
        g += 1
    return g


@lru_cache(maxsize=64)
def root_of_unity(n: int) -> int:
    """The primitive n-th root of unity snarkjs uses, for n a power of two <= 2^28."""
    if n <= 0 or n & (n - 1):
        raise ValueError(f"domain size must be a power of two, got {n}")
    k = n.bit_length() - 1
    if k > TWO_ADICITY:
        raise ValueError(f"Fr has no 2^{k}-th roots of unity (2-adicity {TWO_ADICITY})")
    w = pow(nonresidue(), _ODD_PART, R)
    for _ in range(TWO_ADICITY - k):
        w = w * w % R
    return w
