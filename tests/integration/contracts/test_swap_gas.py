"""Gas of one `swap` on each pool kind, for the router's per-source gas price.

Three numbers per pool kind (receipt gasUsed, i.e. including the 21,000 intrinsic gas and
calldata, for the first two):

- `cold_new_recipient`: a swap transaction paying a recipient that held none of the
  output token (a zero-to-non-zero storage write, +~17k);
- `cold`: a swap transaction in the steady state (every balance already non-zero);
- `warm_marginal`: one more swap in a transaction that already touched the pool and both
  tokens (a helper contract swaps n times; the n=2 minus n=1 difference), as in a batch.

Run with `-s` to see them as JSON.
"""

from __future__ import annotations

import json

import pytest
from web3 import Web3
from web3.contract import Contract

from scripts.solc import compile_sources
from tests.integration.contracts.chain import MAX_UINT, accounts, deploy, send

pytestmark = pytest.mark.integration

# Test-only helper: n swaps in one transaction, to price a swap on warm storage.
SWAP_LOOP = """// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;
interface IPool { function swap(address, uint256, uint256, address) external returns (uint256); }
interface IToken {
    function approve(address, uint256) external returns (bool);
    function transferFrom(address, address, uint256) external returns (bool);
}
contract SwapLoop {
    function run(address pool, address tokenIn, uint256 amountIn, uint256 n, address recipient) external {
        IToken(tokenIn).transferFrom(msg.sender, address(this), amountIn * n);
        IToken(tokenIn).approve(pool, type(uint256).max);
        for (uint256 i = 0; i < n; ++i) IPool(pool).swap(tokenIn, amountIn, 0, recipient);
    }
}
"""

# Ceilings that catch a regression; the measured values are well below.
CEILING = {"ConstantProductPool": 100_000, "StableSwapPool": 130_000}


def _measure(w3: Web3, kind: str, *pool_args: int) -> dict[str, int]:
    deployer, trader, fresh, steady = accounts(w3)[:4]
    usdc = deploy(w3, "TestToken", "USD Coin", "USDC", 6, deployer)
    dai = deploy(w3, "TestToken", "Dai", "DAI", 18, deployer)
    pool = deploy(w3, kind, usdc.address, dai.address, *pool_args)
    for token, unit in ((usdc, 10**6), (dai, 10**18)):
        for holder in (deployer, trader):
            send(token.functions.mint(holder, 10**9 * unit), deployer)
            send(token.functions.approve(pool.address, MAX_UINT), holder)
        send(token.functions.mint(steady, unit), deployer)
    send(pool.functions.addLiquidity(10**7 * 10**6, 10**7 * 10**18, deployer), deployer)
    # Warm up the pool once, so neither measured swap is the pool's very first.
    send(pool.functions.swap(usdc.address, 10**6, 0, trader), trader)

    swap = pool.functions.swap
    cold_new = send(swap(usdc.address, 1000 * 10**6, 0, fresh), trader)["gasUsed"]
    cold = send(swap(usdc.address, 1000 * 10**6, 0, steady), trader)["gasUsed"]
    warm = _warm_marginal(w3, pool, usdc, trader, steady)
    return {"cold_new_recipient": cold_new, "cold": cold, "warm_marginal": warm}


def _warm_marginal(
    w3: Web3, pool: Contract, token_in: Contract, trader: str, recipient: str
) -> int:
    art = compile_sources({"SwapLoop.sol": SWAP_LOOP})["SwapLoop"]
    factory = w3.eth.contract(abi=art.abi, bytecode=art.bytecode)
    tx = factory.constructor().transact({"from": trader, "gas": 2_000_000})
    address = w3.eth.wait_for_transaction_receipt(tx, timeout=30, poll_latency=0.005)[
        "contractAddress"
    ]
    assert address is not None
    loop = w3.eth.contract(address=address, abi=art.abi)
    send(token_in.functions.approve(loop.address, MAX_UINT), trader)
    amount = 1000 * 10**6
    run = loop.functions.run
    # Once first, so the helper's own storage is in its steady state when measured.
    send(run(pool.address, token_in.address, amount, 1, recipient), trader)
    one = send(run(pool.address, token_in.address, amount, 1, recipient), trader)["gasUsed"]
    two = send(run(pool.address, token_in.address, amount, 2, recipient), trader)["gasUsed"]
    return two - one


def test_swap_gas(w3: Web3) -> None:
    gas = {
        "ConstantProductPool": _measure(w3, "ConstantProductPool", 30),
        "StableSwapPool": _measure(w3, "StableSwapPool", 200, 4),
    }
    print(json.dumps({"swap_gas": gas}, indent=1))
    for kind, numbers in gas.items():
        assert (
            numbers["warm_marginal"]
            < numbers["cold"]
            < numbers["cold_new_recipient"]
            < CEILING[kind]
        )
