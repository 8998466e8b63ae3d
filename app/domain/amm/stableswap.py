"""Two-coin Curve StableSwap math, integer for integer as `StableSwapPool.sol` does it.

The invariant (Curve's code form, with `Ann = amp * n` and n = 2):

    Ann * (x0 + x1) + D = Ann * D + D**3 / (4 * x0 * x1)

behaves like a constant sum (price ~1) near balance and like a constant product far from
it. `amp` is Curve's `A()` as the contract stores it (`Ann = amp * 2`, i.e. the
whitepaper's A * n**(n-1)); larger is flatter.

Balances live in token base units; the math runs on *scaled* balances `xp = balance *
rate // 10**18` so that a 6-decimal and an 18-decimal token compare 1:1. The rate of a
token is `rate_for_decimals(decimals) = 10**(36 - decimals)` (1e30 for 6 decimals, 1e18
for 18), exactly Curve's `RATES` and exactly what the contract stores and returns from
`rates(i)`.

A swap of `dx` of coin i for coin j (Curve's `get_dy`/`exchange`):

    D  = get_d((xp_i, xp_j))                     # note: in (in, out) order, see below
    y  = get_y(xp_i + dx * rate_i // 1e18, amp, D)
    dy = xp_j - y - 1                            # the 1 absorbs Newton's rounding
    out = (dy - dy * fee_bps // 10000) * 1e18 // rate_j   # fee stays in the pool

`get_d` folds the balances one after the other with floor divisions, so its last digit
can depend on their order. The pool and this module both evaluate D with the balances in
*(input, output)* order for quotes and swaps (token order only for liquidity shares), so
the functions below need no notion of token0/token1.

`get_amount_out(0)` is 0, and an output that rounds to zero or below is 0 (Curve would
revert on the underflow; the contract's view returns 0 and its `swap` rejects it).

`get_amount_in(b)` returns the smallest input `a` with `get_amount_out(a) >= b` in the
local sense: `get_amount_out(a - 1) < b` always holds (it is found by bracketing and
bisection around the analytic inverse), and it is the global minimum whenever the output
is monotone in the input (it was in every case the tests drew).

Newton's loops run at most 255 rounds and stop once a step is <= 1. Rounding can trap D's
loop in a short cycle a few units wide (tiny amp, lopsided pool); then, like Curve's 3pool,
the 255th iterate is used rather than a revert. Both sides do the same, so they still agree.
"""

from __future__ import annotations

from collections.abc import Sequence

from app.domain.amm import (
    BPS,
    MAX_FEE_BPS,
    U256_MAX,
    InsufficientLiquidity,
    MathOverflow,
)

__all__ = [
    "MAX_AMP",
    "MAX_DECIMALS",
    "MAX_ITERATIONS",
    "N_COINS",
    "PRECISION",
    "get_amount_in",
    "get_amount_out",
    "get_d",
    "get_y",
    "rate_for_decimals",
]

N_COINS = 2
PRECISION = 10**18
MAX_ITERATIONS = 255
MAX_AMP = 1_000_000  # Curve's MAX_A; the contract rejects more at construction
MAX_DECIMALS = 36  # rate 10**(36 - decimals) must stay >= 1


def _u256(value: int) -> int:
    # Mirrors Solidity 0.8 checked arithmetic: a result outside uint256 reverts.
    if value > U256_MAX or value < 0:
        raise MathOverflow("StableSwap intermediate leaves the uint256 range")
    return value


def rate_for_decimals(decimals: int) -> int:
    """The scaling multiplier of a token: `xp = balance * rate // 10**18`."""
    if not 0 <= decimals <= MAX_DECIMALS:
        raise ValueError(f"decimals must be in [0, {MAX_DECIMALS}], got {decimals}")
    return 10 ** (MAX_DECIMALS - decimals)


def get_d(xp: Sequence[int], amp: int) -> int:
    """The invariant D of scaled balances `xp` (2 coins), by Curve's Newton iteration."""
    if len(xp) != N_COINS:
        raise ValueError(f"expected {N_COINS} balances, got {len(xp)}")
    _check_amp(amp)
    x0, x1 = xp
    s = _u256(x0 + x1)
    if s == 0:
        return 0
    if x0 <= 0 or x1 <= 0:
        # Curve divides by each balance: the contract panics on a zero balance.
        raise InsufficientLiquidity(f"a StableSwap balance is empty: {tuple(xp)}")
    ann = amp * N_COINS
    ann_s = _u256(ann * s)
    d = s
    for _ in range(MAX_ITERATIONS):  # stop once a step is <= 1
        d_p = _u256(d * d) // _u256(x0 * N_COINS)
        d_p = _u256(d_p * d) // _u256(x1 * N_COINS)
        d_prev = d
        numerator = _u256(_u256(ann_s + _u256(d_p * N_COINS)) * d)
        denominator = _u256(_u256((ann - 1) * d) + _u256((N_COINS + 1) * d_p))
        if denominator == 0:  # only if D collapsed to 0: the contract panics
            raise MathOverflow("StableSwap get_d divides by zero")
        d = numerator // denominator
        if abs(d - d_prev) <= 1:
            return d
    # Like Curve's 3pool: rounding can trap Newton in a short cycle a few units wide around
    # the root (tiny amp, lopsided pool); the 255th iterate is used rather than reverting.
    return d


_D_CACHE: dict[tuple[int, int, int], int] = {}
_D_CACHE_SIZE = 4096


def _invariant(xp_i: int, xp_j: int, amp: int) -> int:
    """`get_d` of a pool state, remembered: a quote prices the same pool state several
    times (its split, the Newton polish, the best single source) and every quote on the
    same book version does again; D depends only on the balances and amp, so the cached
    value is the one the contract computes."""
    key = (xp_i, xp_j, amp)
    d = _D_CACHE.get(key)
    if d is None:
        d = get_d((xp_i, xp_j), amp)
        if len(_D_CACHE) >= _D_CACHE_SIZE:
            _D_CACHE.clear()
        _D_CACHE[key] = d
    return d


def get_y(x_new: int, amp: int, d: int) -> int:
    """The other coin's scaled balance when one coin's scaled balance is `x_new`.

    With two coins there is no "other" balance to pass besides the one being solved for;
    the invariant is symmetric, so this also inverts itself (solve x from y).
    """
    _check_amp(amp)
    if x_new <= 0:
        raise InsufficientLiquidity("StableSwap balance would be empty")
    ann = amp * N_COINS
    c = _u256(d * d) // _u256(x_new * N_COINS)
    c = _u256(c * d) // (ann * N_COINS)
    b = _u256(x_new + d // ann)
    y = d
    for _ in range(MAX_ITERATIONS):
        y_prev = y
        numerator = _u256(_u256(y * y) + c)
        denominator = _u256(_u256(2 * y + b) - d)
        if denominator == 0:
            raise MathOverflow("StableSwap get_y divides by zero")
        y = numerator // denominator
        if abs(y - y_prev) <= 1:
            return y
    return y  # as for D: the 255th iterate, never a revert


def get_amount_out(
    amount_in: int,
    balance_in: int,
    balance_out: int,
    rate_in: int,
    rate_out: int,
    amp: int,
    fee_bps: int,
) -> int:
    """Output (base units of the output token) for selling `amount_in` into the pool."""
    _check_args(amount_in, rate_in, rate_out, amp, fee_bps)
    xp_i, xp_j = _scaled(balance_in, balance_out, rate_in, rate_out)
    if amount_in == 0:
        return 0
    d = _invariant(xp_i, xp_j, amp)
    return _out(amount_in, xp_i, xp_j, rate_in, rate_out, amp, fee_bps, d)


def get_amount_in(
    amount_out: int,
    balance_in: int,
    balance_out: int,
    rate_in: int,
    rate_out: int,
    amp: int,
    fee_bps: int,
) -> int:
    """Smallest input whose `get_amount_out` is at least `amount_out` (see module doc)."""
    _check_args(amount_out, rate_in, rate_out, amp, fee_bps)
    xp_i, xp_j = _scaled(balance_in, balance_out, rate_in, rate_out)
    if amount_out == 0:
        return 0
    if amount_out >= balance_out:
        raise InsufficientLiquidity(f"amount_out {amount_out} >= balance {balance_out}")
    d = _invariant(xp_i, xp_j, amp)

    # Invert the output formula: the scaled net output we need, the gross dy before the
    # fee, the output balance y that leaves, and (by symmetry of get_y) the input balance.
    target = _u256(amount_out * rate_out + PRECISION - 1) // PRECISION
    dy = _u256((target - 1) * BPS) // (BPS - fee_bps) + 1
    if dy + 2 > xp_j:
        raise InsufficientLiquidity(f"amount_out {amount_out} drains the pool")
    x_target = get_y(xp_j - dy - 1, amp, d)
    need = x_target - xp_i
    guess = _u256(need * PRECISION + rate_in - 1) // rate_in if need > 0 else 1
    guess = max(guess, 1)

    def enough(amount_in: int) -> bool:
        return _out(amount_in, xp_i, xp_j, rate_in, rate_out, amp, fee_bps, d) >= amount_out

    # Newton's rounding makes the inverse approximate: bracket [lo fails, hi enough] with
    # doubling steps from the guess, then bisect to adjacent inputs. Zero always fails.
    step = 1
    if enough(guess):
        hi = guess
        while True:
            if hi <= step:
                lo = 0
                break
            lo = hi - step
            if not enough(lo):
                break
            hi = lo
            step = _u256(step * 2)
    else:
        lo = guess
        while True:
            hi = _u256(lo + step)
            if enough(hi):
                break
            lo = hi
            step = _u256(step * 2)
    while hi - lo > 1:
        mid = lo + (hi - lo) // 2
        if enough(mid):
            hi = mid
        else:
            lo = mid
    return hi


def _out(
    amount_in: int,
    xp_i: int,
    xp_j: int,
    rate_in: int,
    rate_out: int,
    amp: int,
    fee_bps: int,
    d: int,
) -> int:
    if amount_in == 0:
        return 0
    x = _u256(xp_i + _u256(amount_in * rate_in) // PRECISION)
    y = get_y(x, amp, d)
    if y + 1 >= xp_j:
        return 0
    dy = xp_j - y - 1
    fee = _u256(dy * fee_bps) // BPS
    return _u256((dy - fee) * PRECISION) // rate_out


def _scaled(balance_in: int, balance_out: int, rate_in: int, rate_out: int) -> tuple[int, int]:
    if balance_in <= 0 or balance_out <= 0:
        raise InsufficientLiquidity(f"empty pool: balances ({balance_in}, {balance_out})")
    return (
        _u256(balance_in * rate_in) // PRECISION,
        _u256(balance_out * rate_out) // PRECISION,
    )


def _check_amp(amp: int) -> None:
    if not 1 <= amp <= MAX_AMP:
        raise ValueError(f"amp must be in [1, {MAX_AMP}], got {amp}")


def _check_args(amount: int, rate_in: int, rate_out: int, amp: int, fee_bps: int) -> None:
    if amount < 0:
        raise ValueError(f"amount must be >= 0, got {amount}")
    if not 0 <= fee_bps <= MAX_FEE_BPS:
        raise ValueError(f"fee_bps must be in [0, {MAX_FEE_BPS}], got {fee_bps}")
    if rate_in <= 0 or rate_out <= 0:
        raise ValueError(f"rates must be positive, got ({rate_in}, {rate_out})")
    _check_amp(amp)
