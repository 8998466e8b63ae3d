"""Constant-product twin: known values, rounding direction, monotonicity, reverts."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.domain.amm import AmmError, InsufficientLiquidity, MathOverflow
from app.domain.amm.constant_product import get_amount_in, get_amount_out

reserves = st.integers(min_value=1, max_value=10**30)
fees = st.sampled_from([0, 1, 5, 30, 100, 1000])


def test_known_values() -> None:
    # 1000 in, 0.3 % fee, 10k/10k pool: 997 * 10000 / (10000 + 997) -> 906
    assert get_amount_out(1000, 10_000, 10_000, 30) == 906
    assert get_amount_in(906, 10_000, 10_000, 30) == 1000
    # No fee, 1 ETH into 100 ETH / 300k USDC (6 decimals)
    assert get_amount_out(10**18, 100 * 10**18, 300_000 * 10**6, 0) == 2_970_297_029
    # Uniswap V2 reference numbers (fee 30 bps)
    assert get_amount_out(2, 100, 100, 30) == 1
    assert get_amount_in(1, 100, 100, 30) == 2


def test_zero_amounts_quote_zero() -> None:
    assert get_amount_out(0, 10, 10, 30) == 0
    assert get_amount_in(0, 10, 10, 30) == 0


@pytest.mark.parametrize(("r_in", "r_out"), [(0, 10), (10, 0), (0, 0)])
def test_empty_pool_is_insufficient_liquidity(r_in: int, r_out: int) -> None:
    with pytest.raises(InsufficientLiquidity):
        get_amount_out(1, r_in, r_out, 30)
    with pytest.raises(InsufficientLiquidity):
        get_amount_in(1, r_in, r_out, 30)


def test_cannot_buy_the_whole_reserve() -> None:
    with pytest.raises(InsufficientLiquidity):
        get_amount_in(10, 10, 10, 30)
    with pytest.raises(InsufficientLiquidity):
        get_amount_in(11, 10, 10, 30)
    assert isinstance(InsufficientLiquidity("x"), ValueError)


def test_overflow_mirrors_checked_arithmetic() -> None:
    with pytest.raises(MathOverflow):
        get_amount_out(2**200, 2**60, 2**60, 30)
    with pytest.raises(AmmError):
        get_amount_in(2**127, 2**128, 2**128, 30)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        get_amount_out(-1, 10, 10, 30)
    with pytest.raises(ValueError):
        get_amount_out(1, 10, 10, 1001)


@settings(max_examples=150)
@given(a=st.integers(0, 10**30), r_in=reserves, r_out=reserves, fee=fees)
def test_output_bounded_and_k_never_falls(a: int, r_in: int, r_out: int, fee: int) -> None:
    out = get_amount_out(a, r_in, r_out, fee)
    assert 0 <= out < r_out
    assert (r_in + a) * (r_out - out) >= r_in * r_out


@settings(max_examples=150)
@given(a=st.integers(0, 10**30), b=st.integers(0, 10**30), r_in=reserves, r_out=reserves, fee=fees)
def test_monotone_in_amount(a: int, b: int, r_in: int, r_out: int, fee: int) -> None:
    lo, hi = sorted((a, b))
    assert get_amount_out(lo, r_in, r_out, fee) <= get_amount_out(hi, r_in, r_out, fee)


@settings(max_examples=150)
@given(a=st.integers(1, 10**30), r_in=reserves, r_out=reserves)
def test_higher_fee_never_pays_more(a: int, r_in: int, r_out: int) -> None:
    outs = [get_amount_out(a, r_in, r_out, f) for f in (0, 5, 30, 100, 1000)]
    assert outs == sorted(outs, reverse=True)


@settings(max_examples=150)
@given(data=st.data(), r_in=reserves, r_out=st.integers(2, 10**30), fee=fees)
def test_amount_in_buys_at_least_amount_out(
    data: st.DataObject, r_in: int, r_out: int, fee: int
) -> None:
    b = data.draw(st.integers(1, r_out - 1))
    a = get_amount_in(b, r_in, r_out, fee)
    assert get_amount_out(a, r_in, r_out, fee) >= b
    # Uniswap's "+ 1" rounding is at most a couple of wei above the exact inverse.
    assert a <= 2 or get_amount_out(a - 2, r_in, r_out, fee) < b
