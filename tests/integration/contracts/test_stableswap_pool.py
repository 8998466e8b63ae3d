"""StableSwapPool on a real Anvil chain against its Python twin, to the wei.

Pools over 6/8/18-decimal tokens with amp 1-100000 and fees 0-1000 bps are deployed once
per test; each hypothesis example seeds one with random balances (tiny, deep and very
lopsided) inside an evm_snapshot, then compares the first deposit's shares (= D),
getAmountOut, getAmountIn and a real swap with `app.domain.amm.stableswap`.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from web3 import Web3
from web3.contract import Contract

from app.domain.amm import AmmError
from app.domain.amm import stableswap as ss
from scripts.devnet.anvil import AnvilNode
from tests.integration.contracts.chain import (
    MAX_UINT,
    accounts,
    deploy,
    error_selector,
    events,
    onchain,
    revert_data,
    send,
    snapshot,
    twin,
)

pytestmark = pytest.mark.integration

FUNDS = 2**200
# (decimals0, decimals1, amp, fee)
POOLS = [
    (6, 18, 100, 4),
    (18, 6, 2000, 1),
    (8, 18, 10, 30),
    (6, 8, 1, 0),
    (18, 18, 100_000, 1000),
    (6, 18, 1, 30),
    (18, 8, 500, 5),
]


@dataclass(frozen=True, slots=True)
class Pool:
    contract: Contract
    t0: Contract
    t1: Contract
    dec0: int
    dec1: int
    amp: int
    fee: int


@dataclass(frozen=True, slots=True)
class World:
    lp: str
    trader: str
    recipient: str
    pools: list[Pool]


def build_world(w3: Web3) -> World:
    deployer, trader, recipient = accounts(w3)[:3]
    tokens = {d: deploy(w3, "TestToken", f"Token {d}", f"T{d}", d, deployer) for d in (6, 8, 18)}
    # A second 18-decimal token for the 18/18 pool.
    twin18 = deploy(w3, "TestToken", "Token 18b", "T18b", 18, deployer)
    for token in [*tokens.values(), twin18]:
        for holder in (deployer, trader):
            send(token.functions.mint(holder, FUNDS), deployer)
    pools = []
    for d0, d1, amp, fee in POOLS:
        t0, t1 = tokens[d0], (twin18 if d0 == d1 else tokens[d1])
        contract = deploy(w3, "StableSwapPool", t0.address, t1.address, amp, fee)
        assert contract.functions.rates(0).call() == ss.rate_for_decimals(d0)
        assert contract.functions.rates(1).call() == ss.rate_for_decimals(d1)
        assert contract.functions.amp().call() == amp
        for token in (t0, t1):
            for holder in (deployer, trader):
                send(token.functions.approve(contract.address, MAX_UINT), holder)
        pools.append(Pool(contract, t0, t1, d0, d1, amp, fee))
    return World(deployer, trader, recipient, pools)


@st.composite
def balance(draw: st.DrawFn, decimals: int) -> int:
    return draw(
        st.one_of(
            st.integers(1, 1_000),  # near-empty
            st.integers(1, 10 ** (decimals + 6)),
            st.integers(10 ** (decimals + 6), 10 ** (decimals + 12)),
        )
    )


@st.composite
def amounts(draw: st.DrawFn, reserve: int) -> int:
    kind = draw(st.sampled_from(["relative", "relative", "small"]))
    if kind == "small":
        return draw(st.integers(1, 10_000))
    ppm = draw(st.integers(1, 100_000_000))
    return max(1, reserve * ppm // 1_000_000)


def test_swaps_match_the_twin(w3: Web3, anvil: AnvilNode) -> None:
    world = build_world(w3)
    seen: Counter[str] = Counter()

    @settings(
        max_examples=90,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(data=st.data(), zero_for_one=st.booleans())
    def check(data: st.DataObject, zero_for_one: bool) -> None:
        pool = data.draw(st.sampled_from(world.pools))
        b0 = data.draw(balance(pool.dec0))
        b1 = data.draw(balance(pool.dec1))
        with snapshot(anvil):
            _check_example(world, pool, b0, b1, zero_for_one, data, seen)

    check()
    print(dict(seen))
    # Guard against a strategy drift that would quietly stop exercising real swaps.
    assert seen["swapped"] >= 30, seen


def _check_example(
    world: World,
    pool: Pool,
    b0: int,
    b1: int,
    zero_for_one: bool,
    data: st.DataObject,
    seen: Counter[str],
) -> None:
    c = pool.contract
    r0, r1 = ss.rate_for_decimals(pool.dec0), ss.rate_for_decimals(pool.dec1)
    # First deposit: shares are D of the token-ordered scaled balances (or both revert).
    d = twin(lambda: ss.get_d((b0 * r0 // 10**18, b1 * r1 // 10**18), pool.amp))
    if d is None or d == 0:
        assert onchain(c.functions.addLiquidity(b0, b1, world.lp).call) is None
        seen["first deposit reverts (D overflows)"] += 1
        return
    send(c.functions.addLiquidity(b0, b1, world.lp), world.lp)
    assert c.functions.sharesOf(world.lp).call() == d
    assert c.functions.getD().call() == d

    t_in, t_out = (pool.t0, pool.t1) if zero_for_one else (pool.t1, pool.t0)
    bal_in, bal_out = (b0, b1) if zero_for_one else (b1, b0)
    rate_in, rate_out = (r0, r1) if zero_for_one else (r1, r0)
    args = (bal_in, bal_out, rate_in, rate_out, pool.amp, pool.fee)

    # Mostly payable outputs, sometimes the whole balance (which must revert).
    edge = data.draw(st.sampled_from([None, None, None, None, bal_out]))
    want = edge if edge is not None else data.draw(st.integers(1, max(1, bal_out - 1)))
    expected_in = twin(lambda: ss.get_amount_in(want, *args))
    seen["getAmountIn reverts" if expected_in is None else "getAmountIn answers"] += 1
    assert onchain(c.functions.getAmountIn(t_in.address, want).call) == expected_in
    if expected_in is not None:
        # The inverse really is tight: one wei less falls short.
        assert (
            ss.get_amount_out(expected_in, *args)
            >= want
            > ss.get_amount_out(expected_in - 1, *args)
        )

    amount_in = data.draw(amounts(bal_in))
    expected = twin(lambda: ss.get_amount_out(amount_in, *args))
    assert onchain(c.functions.getAmountOut(t_in.address, amount_in).call) == expected
    swap = c.functions.swap
    if expected is None:
        assert onchain(swap(t_in.address, amount_in, 0, world.recipient).call) is None
        seen["quote reverts"] += 1
        return
    if expected == 0:
        err = revert_data(swap(t_in.address, amount_in, 0, world.recipient), world.trader)
        assert err == error_selector("ZeroOutput()")
        seen["output rounds to zero"] += 1
        return
    err = revert_data(swap(t_in.address, amount_in, expected + 1, world.recipient), world.trader)
    assert err.startswith(error_selector("SlippageExceeded(uint256,uint256)"))
    assert int(err[10:74], 16) == expected and int(err[74:138], 16) == expected + 1

    seen["swapped"] += 1
    before = t_out.functions.balanceOf(world.recipient).call()
    receipt = send(swap(t_in.address, amount_in, expected, world.recipient), world.trader)
    new_in, new_out = bal_in + amount_in, bal_out - expected
    new = (new_in, new_out) if zero_for_one else (new_out, new_in)
    assert t_out.functions.balanceOf(world.recipient).call() - before == expected
    assert tuple(c.functions.getReserves().call()) == new
    (sync,) = events(c, "Sync", receipt)
    assert (sync["args"]["reserve0"], sync["args"]["reserve1"]) == new
    (ev,) = events(c, "Swap", receipt)
    assert dict(ev["args"]) == {
        "sender": world.trader,
        "tokenIn": t_in.address,
        "amountIn": amount_in,
        "amountOut": expected,
        "recipient": world.recipient,
    }
    # Quotes on the new balances agree too (both directions).
    new_args = (new_in, new_out, rate_in, rate_out, pool.amp, pool.fee)
    back_args = (new_out, new_in, rate_out, rate_in, pool.amp, pool.fee)
    small = max(1, amount_in // 3)
    assert onchain(c.functions.getAmountOut(t_in.address, small).call) == twin(
        lambda: ss.get_amount_out(small, *new_args)
    )
    back = max(1, expected // 2)
    assert onchain(c.functions.getAmountOut(t_out.address, back).call) == twin(
        lambda: ss.get_amount_out(back, *back_args)
    )


def test_balanced_mixed_decimals_trade_near_one_to_one(w3: Web3) -> None:
    deployer = accounts(w3)[0]
    usdc = deploy(w3, "TestToken", "USD Coin", "USDC", 6, deployer)
    dai = deploy(w3, "TestToken", "Dai", "DAI", 18, deployer)
    pool = deploy(w3, "StableSwapPool", usdc.address, dai.address, 200, 4)
    for token, amount in ((usdc, 10**12), (dai, 10**24)):
        send(token.functions.mint(deployer, 2 * amount), deployer)
        send(token.functions.approve(pool.address, MAX_UINT), deployer)
    send(pool.functions.addLiquidity(10**12, 10**24, deployer), deployer)
    out = pool.functions.getAmountOut(usdc.address, 1000 * 10**6).call()
    # 1000 USDC -> ~999.6 DAI: the 4 bps fee plus a sliver of curvature.
    assert 999_55 * 10**16 < out < 999_61 * 10**16
    assert out == ss.get_amount_out(1000 * 10**6, 10**12, 10**24, 10**30, 10**18, 200, 4)
    receipt = send(pool.functions.swap(usdc.address, 1000 * 10**6, out, deployer), deployer)
    assert events(pool, "Swap", receipt)[0]["args"]["amountOut"] == out


def test_liquidity_and_bad_input(w3: Web3) -> None:
    deployer, other = accounts(w3)[:2]
    a = deploy(w3, "TestToken", "A", "A", 18, deployer)
    b = deploy(w3, "TestToken", "B", "B", 6, deployer)
    pool = deploy(w3, "StableSwapPool", a.address, b.address, 100, 4)
    assert revert_data(pool.functions.getAmountOut(a.address, 1), deployer) == error_selector(
        "InsufficientLiquidity()"
    )
    assert revert_data(pool.functions.rates(2), deployer).startswith(
        error_selector("InvalidIndex(uint256)")
    )
    for token in (a, b):
        send(token.functions.mint(deployer, 10**30), deployer)
        send(token.functions.approve(pool.address, MAX_UINT), deployer)
    receipt = send(pool.functions.addLiquidity(10**24, 10**12, deployer), deployer)
    shares = pool.functions.sharesOf(deployer).call()
    assert shares == 2 * 10**24 and events(pool, "Mint", receipt)[0]["args"]["shares"] == shares
    # A one-sided top-up mints supply * (D1 - D0) / D0.
    d0 = pool.functions.getD().call()
    send(pool.functions.addLiquidity(0, 10**6, other), deployer)
    d1 = pool.functions.getD().call()
    assert pool.functions.sharesOf(other).call() == shares * (d1 - d0) // d0
    receipt = send(pool.functions.removeLiquidity(shares // 2, deployer), deployer)
    (burn,) = events(pool, "Burn", receipt)
    total = shares + pool.functions.sharesOf(other).call()
    assert burn["args"]["amount0"] == (shares // 2) * 10**24 // total
    assert revert_data(pool.functions.removeLiquidity(shares, deployer), deployer).startswith(
        error_selector("InsufficientShares(uint256,uint256)")
    )
    assert revert_data(pool.functions.swap(a.address, 0, 0, deployer), deployer) == error_selector(
        "ZeroAmount()"
    )
    with pytest.raises(AmmError):
        ss.get_amount_in(10**30, 10**24, 10**12, 10**18, 10**30, 100, 4)
    assert revert_data(pool.functions.getAmountIn(a.address, 10**30), deployer) == error_selector(
        "InsufficientLiquidity()"
    )


def test_newton_cycle_keeps_the_255th_iterate(w3: Web3) -> None:
    # amp = 1 and a 1.9e16 : 1e12 scaled imbalance trap D's Newton loop in a 4-cycle
    # (step never <= 1); pool and twin both settle for the 255th iterate, not a revert.
    deployer = accounts(w3)[0]
    big = deploy(w3, "TestToken", "Big", "BIG", 18, deployer)
    small = deploy(w3, "TestToken", "Small", "SML", 6, deployer)
    pool = deploy(w3, "StableSwapPool", big.address, small.address, 1, 30)
    for token in (big, small):
        send(token.functions.mint(deployer, 10**30), deployer)
        send(token.functions.approve(pool.address, MAX_UINT), deployer)
    b0, b1 = 18_979_000_000_000_000, 1
    xp = (b0, b1 * 10**12)
    d = ss.get_d(xp, 1)
    assert d == 1_405_267_415_133_280  # cycle ...272, ...276, ...278, ...280; #255 is ...280
    send(pool.functions.addLiquidity(b0, b1, deployer), deployer)
    assert pool.functions.getD().call() == d
    for amount in (10**12, 10**15, 10**17):
        assert pool.functions.getAmountOut(big.address, amount).call() == ss.get_amount_out(
            amount, b0, b1, 10**18, 10**30, 1, 30
        )
