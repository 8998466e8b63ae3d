"""NTT over Fr against naive polynomial evaluation."""

from __future__ import annotations

import random

import pytest

from settlement.zk.fft import coset_fft, fft, ifft, odd_coset_from_evals, odd_coset_shift
from settlement.zk.field import R, root_of_unity


def _eval(coeffs: list[int], x: int) -> int:
    acc = 0
    for c in reversed(coeffs):
        acc = (acc * x + c) % R
    return acc


@pytest.mark.parametrize("n", [1, 2, 4, 8, 32, 64])
def test_fft_matches_naive(n: int) -> None:
    rng = random.Random(n)
    coeffs = [rng.randrange(R) for _ in range(n)]
    coeffs[0] = R - 1
    w = root_of_unity(n)
    assert fft(coeffs) == [_eval(coeffs, pow(w, i, R)) for i in range(n)]
    assert ifft(fft(coeffs)) == coeffs


@pytest.mark.parametrize("n", [4, 16, 128])
def test_coset_fft_and_odd_coset(n: int) -> None:
    rng = random.Random(n + 1)
    coeffs = [rng.randrange(R) for _ in range(n)]
    w = root_of_unity(n)
    g = rng.randrange(2, R)
    assert coset_fft(coeffs, g) == [_eval(coeffs, g * pow(w, i, R) % R) for i in range(n)]
    w2 = odd_coset_shift(n)
    assert pow(w2, 2, R) == w
    evals = fft(coeffs)
    odd = [int(x) for x in odd_coset_from_evals(evals)]
    assert odd == [_eval(coeffs, pow(w2, 2 * i + 1, R)) for i in range(n)]


def test_rejects_non_power_of_two() -> None:
    with pytest.raises(ValueError):
        fft([1, 2, 3])
