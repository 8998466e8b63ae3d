"""ConstantProductPool on a real Anvil chain against its Python twin, to the wei.

A few pools (6/8/18-decimal tokens, fees 0-1000 bps) are deployed once per test; each
hypothesis example seeds one of them with random reserves (the first deposit sets them
exactly, tiny and lopsided included) inside an evm_snapshot, compares getAmountOut,
getAmountIn and a real swap with `app.domain.amm.constant_product`, then reverts.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from web3 import Web3
from web3.contract import Contract
from web3.exceptions import ContractLogicError

from app.domain.amm import constant_product as cp
from scripts.build_contracts import load_artifact
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
PAIRS = [(6, 18), (18, 6), (8, 18), (6, 8)]
FEES = [0, 5, 30, 100, 1000]
MAX_RESERVE = 2**110  # far below uint128, so no swap here can overflow a reserve


@dataclass(frozen=True, slots=True)
class World:
    w3: Web3
    lp: str
    trader: str
    recipient: str
    tokens: dict[int, Contract]
    pools: list[tuple[Contract, Contract, Contract, int]]  # pool, token0, token1, fee


def build_world(w3: Web3) -> World:
    deployer, trader, recipient = accounts(w3)[:3]
    tokens = {d: deploy(w3, "TestToken", f"Token {d}", f"T{d}", d, deployer) for d in (6, 8, 18)}
    for token in tokens.values():
        for holder in (deployer, trader):
            send(token.functions.mint(holder, FUNDS), deployer)
    pools = []
    for i, (a, b) in enumerate(PAIRS):
        for fee in [*FEES[i % 2 :: 2], 30]:
            t0, t1 = tokens[a], tokens[b]
            pool = deploy(w3, "ConstantProductPool", t0.address, t1.address, fee)
            for token in (t0, t1):
                for holder in (deployer, trader):
                    send(token.functions.approve(pool.address, MAX_UINT), holder)
            pools.append((pool, t0, t1, fee))
    return World(w3, deployer, trader, recipient, tokens, pools)


reserves = st.one_of(
    st.integers(1, 1_000),  # near-empty
    st.integers(1, 10**24),
    st.integers(10**24, MAX_RESERVE),
)


@st.composite
def amounts(draw: st.DrawFn, reserve: int) -> int:
    # Mostly relative to the reserve (a sliver to 100x), sometimes a plain small number.
    kind = draw(st.sampled_from(["relative", "relative", "small"]))
    if kind == "small":
        return draw(st.integers(1, 10_000))
    ppm = draw(st.integers(1, 100_000_000))
    return min(max(1, reserve * ppm // 1_000_000), MAX_RESERVE)


def test_swaps_match_the_twin(w3: Web3, anvil: AnvilNode) -> None:
    world = build_world(w3)
    seen: Counter[str] = Counter()

    @settings(
        max_examples=100,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(data=st.data(), r0=reserves, r1=reserves, zero_for_one=st.booleans())
    def check(data: st.DataObject, r0: int, r1: int, zero_for_one: bool) -> None:
        pool, t0, t1, fee = data.draw(st.sampled_from(world.pools))
        with snapshot(anvil):
            _check_example(world, pool, t0, t1, fee, r0, r1, zero_for_one, data, seen)

    check()
    print(dict(seen))
    # Guard against a strategy drift that would quietly stop exercising real swaps.
    assert seen["swapped"] >= 30, seen


def _check_example(
    world: World,
    pool: Contract,
    t0: Contract,
    t1: Contract,
    fee: int,
    r0: int,
    r1: int,
    zero_for_one: bool,
    data: st.DataObject,
    seen: Counter[str],
) -> None:
    send(pool.functions.addLiquidity(r0, r1, world.lp), world.lp)
    assert pool.functions.getReserves().call() == [r0, r1]
    token_in, token_out = (t0, t1) if zero_for_one else (t1, t0)
    r_in, r_out = (r0, r1) if zero_for_one else (r1, r0)

    # getAmountIn, including outputs the pool cannot pay (>= reserve).
    # Mostly payable outputs, sometimes all of the reserve or more (which must revert).
    edge = data.draw(st.sampled_from([None, None, None, None, r_out, r_out + 7]))
    want = edge if edge is not None else data.draw(st.integers(1, max(1, r_out - 1)))
    expected_in = twin(lambda: cp.get_amount_in(want, r_in, r_out, fee))
    seen["getAmountIn reverts" if expected_in is None else "getAmountIn answers"] += 1
    assert onchain(pool.functions.getAmountIn(token_in.address, want).call) == expected_in

    amount_in = data.draw(amounts(r_in))
    expected = cp.get_amount_out(amount_in, r_in, r_out, fee)
    assert pool.functions.getAmountOut(token_in.address, amount_in).call() == expected

    swap = pool.functions.swap
    if expected == 0:
        err = revert_data(swap(token_in.address, amount_in, 0, world.recipient), world.trader)
        assert err == error_selector("ZeroOutput()")
        seen["output rounds to zero"] += 1
        return
    err = revert_data(
        swap(token_in.address, amount_in, expected + 1, world.recipient), world.trader
    )
    assert err.startswith(error_selector("SlippageExceeded(uint256,uint256)"))
    assert int(err[10:74], 16) == expected and int(err[74:138], 16) == expected + 1

    seen["swapped"] += 1
    before = token_out.functions.balanceOf(world.recipient).call()
    receipt = send(swap(token_in.address, amount_in, expected, world.recipient), world.trader)
    new_in, new_out = r_in + amount_in, r_out - expected
    new = (new_in, new_out) if zero_for_one else (new_out, new_in)
    assert token_out.functions.balanceOf(world.recipient).call() - before == expected
    assert tuple(pool.functions.getReserves().call()) == new
    (sync,) = events(pool, "Sync", receipt)
    assert (sync["args"]["reserve0"], sync["args"]["reserve1"]) == new
    (ev,) = events(pool, "Swap", receipt)
    assert dict(ev["args"]) == {
        "sender": world.trader,
        "tokenIn": token_in.address,
        "amountIn": amount_in,
        "amountOut": expected,
        "recipient": world.recipient,
    }
    # The next quote runs on the new reserves and still agrees with the twin.
    again = twin(lambda: cp.get_amount_out(amount_in, new_in, new_out, fee))
    assert onchain(pool.functions.getAmountOut(token_in.address, amount_in).call) == again


def test_rejects_bad_input(w3: Web3) -> None:
    deployer, trader = accounts(w3)[:2]
    a = deploy(w3, "TestToken", "A", "A", 18, deployer)
    b = deploy(w3, "TestToken", "B", "B", 6, deployer)
    art = load_artifact("ConstantProductPool")
    ctor = w3.eth.contract(abi=art["abi"], bytecode=art["bytecode"]).constructor(
        a.address, b.address, 1001
    )
    with pytest.raises(ContractLogicError) as err:
        w3.eth.call({"from": deployer, "data": ctor.data_in_transaction})
    assert str(err.value.data).startswith(error_selector("FeeTooHigh(uint256)"))
    pool = deploy(w3, "ConstantProductPool", a.address, b.address, 30)
    # Empty pool: quotes revert like the twin raises.
    assert revert_data(pool.functions.getAmountOut(a.address, 1), trader) == error_selector(
        "InsufficientLiquidity()"
    )
    for token in (a, b):
        send(token.functions.mint(deployer, 10**30), deployer)
        send(token.functions.approve(pool.address, MAX_UINT), deployer)
    send(pool.functions.addLiquidity(10**24, 10**12, deployer), deployer)
    stranger = accounts(w3)[5]
    assert revert_data(pool.functions.getAmountOut(stranger, 1), trader).startswith(
        error_selector("InvalidToken(address)")
    )
    assert revert_data(pool.functions.swap(a.address, 0, 0, trader), trader) == error_selector(
        "ZeroAmount()"
    )
    # No allowance: the token's own error comes through.
    assert revert_data(pool.functions.swap(a.address, 10**18, 0, trader), trader).startswith(
        error_selector("InsufficientAllowance(address,address,uint256,uint256)")
    )


def test_liquidity_round_trip(w3: Web3) -> None:
    deployer, other = accounts(w3)[:2]
    a = deploy(w3, "TestToken", "A", "A", 18, deployer)
    b = deploy(w3, "TestToken", "B", "B", 6, deployer)
    pool = deploy(w3, "ConstantProductPool", a.address, b.address, 30)
    for token in (a, b):
        send(token.functions.mint(deployer, 10**30), deployer)
        send(token.functions.approve(pool.address, MAX_UINT), deployer)
    receipt = send(pool.functions.addLiquidity(4 * 10**18, 10**6, deployer), deployer)
    shares = pool.functions.sharesOf(deployer).call()
    assert shares == 2 * 10**12  # sqrt(4e18 * 1e6)
    (mint,) = events(pool, "Mint", receipt)
    assert mint["args"]["shares"] == shares
    # A second, proportional deposit mints proportional shares to another owner.
    send(pool.functions.addLiquidity(2 * 10**18, 5 * 10**5, other), deployer)
    assert pool.functions.sharesOf(other).call() == shares // 2
    receipt = send(pool.functions.removeLiquidity(shares, deployer), deployer)
    (burn,) = events(pool, "Burn", receipt)
    assert (burn["args"]["amount0"], burn["args"]["amount1"]) == (4 * 10**18, 10**6)
    assert pool.functions.getReserves().call() == [2 * 10**18, 5 * 10**5]
    assert pool.functions.totalSupply().call() == shares // 2
