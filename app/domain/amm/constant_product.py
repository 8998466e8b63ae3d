"""Constant-product (Uniswap V2 style) pool math with a fee in basis points.

The pool holds reserves `r_in`, `r_out` and keeps `r_in * r_out` from falling across a
trade after the fee is taken from the input:

    out = a * (10000 - fee) * r_out // (r_in * 10000 + a * (10000 - fee))
    in  = r_in * b * 10000 // ((r_out - b) * (10000 - fee)) + 1

`get_amount_in` rounds up (the `+ 1`), so `get_amount_out(get_amount_in(b)) >= b`.
Both functions mirror `ConstantProductPool.sol` exactly, including its reverts: an empty
reserve or `b >= r_out` raises `InsufficientLiquidity`, an intermediate above 2**256 - 1
raises `MathOverflow`. A zero amount quotes zero (the contract's views do the same; its
`swap` rejects a zero input).
"""

from __future__ import annotations

from app.domain.amm import BPS, MAX_FEE_BPS, U256_MAX, InsufficientLiquidity, MathOverflow

__all__ = ["get_amount_in", "get_amount_out"]


def _check_args(amount: int, reserve_in: int, reserve_out: int, fee_bps: int) -> None:
    if amount < 0:
        raise ValueError(f"amount must be >= 0, got {amount}")
    if not 0 <= fee_bps <= MAX_FEE_BPS:
        raise ValueError(f"fee_bps must be in [0, {MAX_FEE_BPS}], got {fee_bps}")
    if reserve_in <= 0 or reserve_out <= 0:
        raise InsufficientLiquidity(f"empty pool: reserves ({reserve_in}, {reserve_out})")


def get_amount_out(amount_in: int, reserve_in: int, reserve_out: int, fee_bps: int) -> int:
    """Output for selling `amount_in` into a pool with these reserves (rounded down)."""
    _check_args(amount_in, reserve_in, reserve_out, fee_bps)
    if amount_in == 0:
        return 0
    in_with_fee = amount_in * (BPS - fee_bps)
    numerator = in_with_fee * reserve_out
    denominator = reserve_in * BPS + in_with_fee
    # numerator and denominator bound every intermediate the contract computes.
    if numerator > U256_MAX or denominator > U256_MAX:
        raise MathOverflow("constant-product getAmountOut overflows uint256")
    return numerator // denominator


def get_amount_in(amount_out: int, reserve_in: int, reserve_out: int, fee_bps: int) -> int:
    """Smallest-ish input that yields at least `amount_out` (Uniswap's round-up, `+ 1`)."""
    _check_args(amount_out, reserve_in, reserve_out, fee_bps)
    if amount_out == 0:
        return 0
    if amount_out >= reserve_out:
        raise InsufficientLiquidity(f"amount_out {amount_out} >= reserve {reserve_out}")
    numerator = reserve_in * amount_out * BPS
    denominator = (reserve_out - amount_out) * (BPS - fee_bps)
    if numerator > U256_MAX or denominator > U256_MAX:
        raise MathOverflow("constant-product getAmountIn overflows uint256")
    amount_in = numerator // denominator + 1
    if amount_in > U256_MAX:
        raise MathOverflow("constant-product getAmountIn overflows uint256")
    return amount_in
