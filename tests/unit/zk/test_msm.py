"""Curve arithmetic and MSM against py_ecc."""

from __future__ import annotations

import random

import pytest
from py_ecc import bn128

from settlement.zk.constants import SCALAR_FIELD as r
from settlement.zk.curve import (
    G1_GENERATOR,
    G2_GENERATOR,
    g1_add,
    g1_from_py_ecc,
    g1_is_on_curve,
    g1_mul,
    g1_neg,
    g1_to_py_ecc,
    g2_add,
    g2_from_py_ecc,
    g2_in_subgroup,
    g2_is_on_curve,
    g2_mul,
    g2_neg,
    g2_to_py_ecc,
)
from settlement.zk.msm import (
    G1,
    G2,
    Channel,
    fixed_base_mul,
    msm_g1,
    msm_g2,
    run_parallel,
    signed_digits,
)

EDGE = [0, 1, 2, r - 1, r - 2, (1 << 128) + 1]


def _naive_g1(points: list, scalars: list[int]):  # type: ignore[no-untyped-def]
    acc = None
    for p, s in zip(points, scalars, strict=True):
        if p is not None:
            acc = (
                bn128.add(acc, bn128.multiply(g1_to_py_ecc(p), s % r))
                if acc
                else bn128.multiply(g1_to_py_ecc(p), s % r)
            )
    return g1_from_py_ecc(acc) if acc is not None else None


def _naive_g2(points: list, scalars: list[int]):  # type: ignore[no-untyped-def]
    acc = None
    for p, s in zip(points, scalars, strict=True):
        if p is not None:
            term = bn128.multiply(g2_to_py_ecc(p), s % r)
            acc = term if acc is None else bn128.add(acc, term)
    return g2_from_py_ecc(acc) if acc is not None else None


def test_single_point_ops_match_py_ecc() -> None:
    rng = random.Random(1)
    for k in [*EDGE, rng.randrange(r)]:
        assert g1_mul(G1_GENERATOR, k) == g1_from_py_ecc(bn128.multiply(bn128.G1, k))
        assert g2_mul(G2_GENERATOR, k) == g2_from_py_ecc(bn128.multiply(bn128.G2, k))
    p, q = g1_mul(G1_GENERATOR, 5), g1_mul(G1_GENERATOR, 7)
    assert g1_add(p, q) == g1_mul(G1_GENERATOR, 12)
    assert g1_add(p, g1_neg(p)) is None
    assert g1_add(p, p) == g1_mul(G1_GENERATOR, 10)
    p2, q2 = g2_mul(G2_GENERATOR, 5), g2_mul(G2_GENERATOR, 7)
    assert g2_add(p2, q2) == g2_mul(G2_GENERATOR, 12)
    assert g2_add(p2, g2_neg(p2)) is None
    assert g1_is_on_curve(p) and g2_is_on_curve(p2) and g2_in_subgroup(p2)
    assert not g1_is_on_curve((1, 3))


def test_signed_digits_reconstruct() -> None:
    rng = random.Random(2)
    scalars = [*EDGE[:4], *(rng.randrange(r) for _ in range(50))]
    for c in (3, 8, 13, 16):
        windows = -(-(r.bit_length() + 1) // c)
        d = signed_digits(scalars, c, windows)
        assert abs(d).max() <= 1 << (c - 1)
        for s, row in zip(scalars, d.tolist(), strict=True):
            assert sum(v << (c * w) for w, v in enumerate(row)) == s


def test_msm_g1_matches_naive_with_edge_scalars_and_points() -> None:
    rng = random.Random(3)
    pts = [g1_mul(G1_GENERATOR, rng.randrange(1, r)) for _ in range(30)]
    scalars = [rng.randrange(r) for _ in pts]
    scalars[: len(EDGE)] = EDGE
    pts[7] = None  # infinity in the bases
    pts[9] = pts[8]  # repeated base: forces doubling inside buckets
    scalars[9] = scalars[8]
    pts[11] = g1_neg(pts[10])  # P and -P with the same scalar cancel
    scalars[11] = scalars[10]
    assert msm_g1(pts, scalars) == _naive_g1(pts, scalars)
    assert msm_g1(pts, [0] * len(pts)) is None
    assert msm_g1([], []) is None
    assert msm_g1(pts[:1], [1]) == pts[0]


@pytest.mark.parametrize("n", [1, 5])
def test_msm_g2_matches_naive(n: int) -> None:
    rng = random.Random(n)
    pts = [g2_mul(G2_GENERATOR, rng.randrange(1, r)) for _ in range(n)]
    scalars = [rng.choice(EDGE) if rng.random() < 0.3 else rng.randrange(r) for _ in pts]
    assert msm_g2(pts, scalars) == _naive_g2(pts, scalars)


def test_msm_g2_matches_py_ecc_through_known_logs() -> None:
    """40 bases (beyond the small-input path) with known discrete logs k_i: the MSM must
    equal py_ecc's (sum s_i k_i mod r) * G2, one multiplication instead of 40 (the
    term-by-term reference costs ~15 s in py_ecc's affine G2)."""
    rng = random.Random(40)
    logs = [rng.randrange(1, r) for _ in range(40)]
    pts = [g2_mul(G2_GENERATOR, k) for k in logs]
    scalars = [rng.choice(EDGE) if rng.random() < 0.3 else rng.randrange(r) for _ in pts]
    pts[7], scalars[7] = pts[6], scalars[6]  # a repeated base and scalar
    logs[7] = logs[6]
    want = bn128.multiply(bn128.G2, sum(s * k for s, k in zip(scalars, logs, strict=True)) % r)
    assert msm_g2(pts, scalars) == g2_from_py_ecc(want)


def test_msm_many_small_scalars() -> None:
    """Mostly 0/1 scalars (a witness of bits) with a few big ones."""
    rng = random.Random(4)
    pts = [g1_mul(G1_GENERATOR, rng.randrange(1, r)) for _ in range(64)]
    scalars = [rng.randrange(2) for _ in pts]
    scalars[3] = r - 1
    assert msm_g1(pts, scalars) == _naive_g1(pts, scalars)


def test_fixed_base_mul() -> None:
    rng = random.Random(5)
    scalars = [*EDGE, *(rng.randrange(r) for _ in range(20))]
    assert fixed_base_mul(G1, G1_GENERATOR, scalars, window=5, chunk=7) == [
        g1_mul(G1_GENERATOR, s) for s in scalars
    ]
    small = scalars[:8]
    assert fixed_base_mul(G2, G2_GENERATOR, small, window=4) == [
        g2_mul(G2_GENERATOR, s) for s in small
    ]


def test_run_parallel_returns_both_and_propagates_errors() -> None:
    def here(chan: Channel) -> int:
        chan.send(list(range(100_000)))  # larger than a pipe buffer
        return 1

    def there(chan: Channel) -> int:
        return sum(chan.recv())

    expected = (1, sum(range(100_000)))
    assert run_parallel(here, there) == expected
    assert run_parallel(here, there, processes=1) == expected

    def boom(chan: Channel) -> int:
        raise ValueError("x")

    with pytest.raises(RuntimeError, match="ValueError"):
        run_parallel(lambda chan: 1, boom)
