"""Fr helpers: inverses, batch inversion, roots of unity (snarkjs's choice)."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from settlement.zk.field import TWO_ADICITY, R, batch_inverse, inverse, nonresidue, root_of_unity

elements = st.integers(min_value=1, max_value=R - 1)


@given(elements)
def test_inverse(a: int) -> None:
    assert a * inverse(a) % R == 1


def test_inverse_of_zero_raises() -> None:
    with pytest.raises(ZeroDivisionError):
        inverse(0)
    with pytest.raises(ZeroDivisionError):
        batch_inverse([1, R, 2])


@given(st.lists(elements, max_size=40))
def test_batch_inverse_matches_single(values: list[int]) -> None:
    assert batch_inverse(values) == [inverse(v) for v in values]


def test_batch_inverse_edge_values() -> None:
    vals = [1, R - 1, 2, random.randrange(1, R)]
    assert all(v * i % R == 1 for v, i in zip(vals, batch_inverse(vals), strict=True))


def test_roots_of_unity_are_primitive_and_nested() -> None:
    assert TWO_ADICITY == 28
    assert nonresidue() == 5  # ffjavascript's nqr for the BN254 scalar field
    for k in range(0, 12):
        n = 1 << k
        w = root_of_unity(n)
        assert pow(w, n, R) == 1
        if n > 1:
            assert pow(w, n // 2, R) == R - 1
            assert root_of_unity(n // 2) == w * w % R
    with pytest.raises(ValueError):
        root_of_unity(12)
    with pytest.raises(ValueError):
        root_of_unity(1 << 29)
