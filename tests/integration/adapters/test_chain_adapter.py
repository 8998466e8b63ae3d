"""The chain adapter follows a real devnet chain: reserves, swaps, transfers, halts."""

from __future__ import annotations

import asyncio
import time

import pytest
from web3 import Web3

from adapters.chain import ChainAdapter, ChainUpdate
from app.manifest import ChainInfo
from scripts.build_contracts import load_artifact
from scripts.devnet.devnet import Devnet

pytestmark = pytest.mark.integration


def _w3(c: ChainInfo) -> Web3:
    return Web3(Web3.HTTPProvider(c.rpc_url, request_kwargs={"timeout": 10}))


class Recorder:
    def __init__(self) -> None:
        self.updates: list[ChainUpdate] = []

    def __call__(self, u: ChainUpdate) -> None:
        self.updates.append(u)

    async def wait_for(self, pred, timeout: float = 10.0) -> ChainUpdate:  # type: ignore[no-untyped-def]
        deadline = time.monotonic() + timeout
        seen = 0
        while time.monotonic() < deadline:
            for u in self.updates[seen:]:
                if pred(u):
                    return u
            seen = len(self.updates)
            await asyncio.sleep(0.02)
        raise AssertionError(f"no matching update in {timeout}s; last: {self.updates[-1:]}")


async def _run(adapter: ChainAdapter) -> asyncio.Task[None]:
    task = asyncio.create_task(adapter.run())
    await adapter.wait_ready()
    return task


async def _stop(adapter: ChainAdapter, task: asyncio.Task[None]) -> None:
    adapter.stop()
    await asyncio.wait_for(task, 10)


async def test_initial_state_equals_chain_and_a_swap_shows_up_within_a_block(clean_devnet: Devnet) -> None:
    m = clean_devnet.manifest
    assert m is not None
    chain = next(c for c in m.chains if c.block_time == 1.0)
    rec = Recorder()
    adapter = ChainAdapter(chain, rec)
    task = await _run(adapter)
    try:
        first = rec.updates[0]
        assert first.full and len(first.sources) == len(chain.pools)
        w3 = _w3(chain)
        pool_info = next(p for p in chain.pools if p.kind == "constant_product" and p.symbol0 == "WETH")
        pool = w3.eth.contract(address=Web3.to_checksum_address(pool_info.address), abi=load_artifact("ConstantProductPool")["abi"])
        r0, r1 = pool.functions.getReserves().call()
        src = first.sources[f"{chain.chain_id}:{pool_info.address.lower()}"]
        assert (src.balance0, src.balance1) == (r0, r1)  # type: ignore[attr-defined]

        trader = m.traders[0].address
        weth = w3.eth.contract(address=Web3.to_checksum_address(chain.tokens["WETH"].address), abi=load_artifact("TestToken")["abi"])
        ap = weth.functions.approve(pool.address, 10**18).transact({"from": trader})
        w3.eth.wait_for_transaction_receipt(ap, timeout=10)  # blocks are mined on a clock
        tx = pool.functions.swap(weth.address, 10**18, 0, trader).transact({"from": trader})
        rc = w3.eth.wait_for_transaction_receipt(tx, timeout=10)
        r0b, r1b = pool.functions.getReserves().call(block_identifier=rc["blockNumber"])
        upd = await rec.wait_for(lambda u: src.id in u.sources and u.block_number >= rc["blockNumber"])
        assert upd.block_number == rc["blockNumber"]  # reflected in the very block it was mined in
        new = upd.sources[src.id]
        assert (new.balance0, new.balance1) == (r0b, r1b)  # type: ignore[attr-defined]
    finally:
        await _stop(adapter, task)


async def test_inventory_balance_follows_transfers(clean_devnet: Devnet) -> None:
    m = clean_devnet.manifest
    assert m is not None
    chain = next(c for c in m.chains if c.block_time == 0.25)
    rec = Recorder()
    adapter = ChainAdapter(chain, rec)
    task = await _run(adapter)
    try:
        usdc = chain.tokens["USDC"].address
        key = (usdc.lower(), chain.inventory.lower())
        start = rec.updates[0].balances[key]
        w3 = _w3(chain)
        tok = w3.eth.contract(address=Web3.to_checksum_address(usdc), abi=load_artifact("TestToken")["abi"])
        tok.functions.transfer(chain.inventory, 1234567).transact({"from": m.traders[1].address})
        upd = await rec.wait_for(lambda u: not u.full and key in u.balances)
        assert upd.balances[key] == start + 1234567
    finally:
        await _stop(adapter, task)


async def test_halted_chain_becomes_unavailable_and_comes_back(clean_devnet: Devnet) -> None:
    m = clean_devnet.manifest
    assert m is not None
    chain = next(c for c in m.chains if c.block_time == 0.25)
    rec = Recorder()
    adapter = ChainAdapter(chain, rec, stall_after=1.0)
    task = await _run(adapter)
    try:
        clean_devnet.halt(chain.chain_id)
        down = await rec.wait_for(lambda u: not u.available, timeout=5)
        assert "no new block" in down.reason
        assert not adapter.available
        clean_devnet.resume(chain.chain_id)
        await rec.wait_for(lambda u: u.available and u.block_number > down.block_number, timeout=5)
        assert adapter.available
    finally:
        await _stop(adapter, task)


async def test_reorg_triggers_a_full_resync(devnet: Devnet) -> None:
    # Not `clean_devnet`: anvil_reorg discards snapshots above the fork point, and a
    # reorg of empty blocks changes no state worth restoring.
    from scripts.devnet.devnet import reorg

    m = devnet.manifest
    assert m is not None
    chain = next(c for c in m.chains if c.block_time == 1.0)
    rec = Recorder()
    adapter = ChainAdapter(chain, rec)
    task = await _run(adapter)
    try:
        await rec.wait_for(lambda u: not u.full)  # following heads normally
        n = len(rec.updates)
        reorg(chain.rpc_url, 2)
        await asyncio.sleep(0)
        upd = await rec.wait_for(lambda u: u.full and rec.updates.index(u) >= n, timeout=5)
        assert len(upd.sources) == len(chain.pools)
    finally:
        await _stop(adapter, task)


async def test_a_tracked_account_reads_what_the_tokens_say(clean_devnet: Devnet) -> None:
    """`track` (a new trader's first order) reads every token's balance and allowance to
    the vault in one raw batch: the same numbers as the contracts' own views, and every
    pair of them, in order (an allowance is set to a distinct value per token)."""
    m = clean_devnet.manifest
    assert m is not None
    chain = m.chains[1]
    trader = m.traders[6]
    adapter = ChainAdapter(chain, Recorder())
    task = await _run(adapter)
    try:
        w3 = _w3(chain)
        abi = load_artifact("TestToken")["abi"]
        tokens = {sym: w3.eth.contract(address=Web3.to_checksum_address(t.address), abi=abi) for sym, t in chain.tokens.items()}
        for k, tok in enumerate(tokens.values()):
            tx = tok.functions.approve(adapter.spender, 10**30 + k).transact({"from": trader.address})
            w3.eth.wait_for_transaction_receipt(tx, timeout=10)
        balances, allowances = await adapter.track(trader.address)
        for k, (sym, tok) in enumerate(tokens.items()):
            key = (chain.tokens[sym].address.lower(), trader.address.lower())
            assert balances[key] == tok.functions.balanceOf(trader.address).call()
            assert allowances[key] == tok.functions.allowance(trader.address, adapter.spender).call() == 10**30 + k
    finally:
        await _stop(adapter, task)
