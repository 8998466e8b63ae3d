"""The default 3-chain devnet, for real: chains, contracts, funding, block production, faults."""

from __future__ import annotations

import time

import pytest
from web3 import Web3
from web3.exceptions import TransactionNotFound

from scripts.build_contracts import load_artifact
from scripts.devnet.devnet import Devnet, DevnetError, reorg, reorg_from
from scripts.devnet.status import devnet_status

pytestmark = pytest.mark.integration


def _w3(url: str) -> Web3:
    return Web3(Web3.HTTPProvider(url, request_kwargs={"timeout": 10}))


def _height(url: str) -> int:
    return int(_w3(url).eth.block_number)


def test_manifest_lists_three_distinct_chains_with_every_contract(devnet: Devnet) -> None:
    m = devnet.manifest
    assert m is not None
    assert len(m.chains) == 3
    assert len({c.chain_id for c in m.chains}) == 3
    assert len({c.rpc_url for c in m.chains}) == 3
    token_abi = load_artifact("TestToken")["abi"]
    for c in m.chains:
        w3 = _w3(c.rpc_url)
        assert w3.eth.chain_id == c.chain_id
        assert set(c.tokens) == {"USDC", "USDT", "DAI", "WETH", "WBTC"}
        for sym, tok in c.tokens.items():
            erc = w3.eth.contract(address=Web3.to_checksum_address(tok.address), abi=token_abi)
            assert erc.functions.symbol().call() == sym
            assert erc.functions.decimals().call() == tok.decimals
            assert erc.functions.balanceOf(c.inventory).call() > 0  # the vault holds the inventory
            assert c.inventory == c.contracts["settlement"]
            for acct in (*m.traders, *m.makers):
                assert erc.functions.balanceOf(acct.address).call() > 0
            for acct in (*m.traders, *m.makers):
                assert erc.functions.allowance(acct.address, c.inventory).call() == 2**256 - 1
        assert len(c.pools) >= 4
        assert {p.kind for p in c.pools} == {"constant_product", "stableswap"}
        for p in c.pools:
            assert len(w3.eth.get_code(Web3.to_checksum_address(p.address))) > 0


def test_status_reports_heights_finality_and_nonzero_reserves(devnet: Devnet) -> None:
    assert devnet.manifest is not None
    doc = devnet_status(devnet.manifest, devnet.control_path)
    assert len(doc["chains"]) == 3
    for c in doc["chains"]:
        assert c["available"] is True
        assert c["halted"] is False
        assert c["finalizedHeight"] == max(0, c["height"] - c["finalityDepth"])
        assert c["pools"] and all(int(p["reserve0"]) > 0 and int(p["reserve1"]) > 0 for p in c["pools"])


def test_prices_differ_across_chains_so_large_trades_can_split(devnet: Devnet) -> None:
    assert devnet.manifest is not None
    doc = devnet_status(devnet.manifest)
    prices = set()
    for c in doc["chains"]:
        pool = next(p for p in c["pools"] if p["pair"] == "WETH/USDC" and p["feeBps"] == 30)
        prices.add(int(pool["reserve1"]) * 10**12 // int(pool["reserve0"]))
    assert len(prices) == 3


def test_blocks_are_produced_at_each_chains_block_time(devnet: Devnet) -> None:
    assert devnet.manifest is not None
    fast = min(devnet.manifest.chains, key=lambda c: c.block_time)
    slow = max(devnet.manifest.chains, key=lambda c: c.block_time)
    h_fast, h_slow = _height(fast.rpc_url), _height(slow.rpc_url)
    time.sleep(2.2)
    d_fast = _height(fast.rpc_url) - h_fast
    d_slow = _height(slow.rpc_url) - h_slow
    assert d_fast > d_slow
    assert d_fast >= 4  # 0.25 s blocks: ~8 expected, lenient for a busy machine


def test_halt_stops_and_resume_restarts_block_production(clean_devnet: Devnet) -> None:
    m = clean_devnet.manifest
    assert m is not None
    chain = min(m.chains, key=lambda c: c.block_time)
    clean_devnet.halt(chain.chain_id)
    time.sleep(0.3)  # a block already in flight may land
    h = _height(chain.rpc_url)
    time.sleep(1.0)
    assert _height(chain.rpc_url) == h
    status = devnet_status(m, clean_devnet.control_path)
    assert next(c for c in status["chains"] if c["chainId"] == chain.chain_id)["halted"] is True
    clean_devnet.resume(chain.chain_id)
    time.sleep(1.0)
    assert _height(chain.rpc_url) > h


def test_reorg_replaces_recent_blocks_and_drops_their_transactions(clean_devnet: Devnet) -> None:
    m = clean_devnet.manifest
    assert m is not None
    chain = min(m.chains, key=lambda c: c.block_time)
    w3 = _w3(chain.rpc_url)
    trader = m.traders[0]
    tx = w3.eth.send_transaction({"from": trader.address, "to": m.traders[1].address, "value": 12345})
    rc = w3.eth.wait_for_transaction_receipt(tx, timeout=10)
    old_hash = w3.eth.get_block(rc["blockNumber"])["hash"]
    depth = _height(chain.rpc_url) - rc["blockNumber"] + 1
    clean_devnet.halt(chain.chain_id)
    reorg(chain.rpc_url, depth)
    assert w3.eth.get_block(rc["blockNumber"])["hash"] != old_hash
    with pytest.raises(TransactionNotFound):
        w3.eth.get_transaction_receipt(tx)


def test_reorg_from_a_block_replaces_it_while_the_chain_keeps_mining(clean_devnet: Devnet) -> None:
    """Unlike a depth, a block number stays right when the chain mines between our
    reading its head and the reorg: the block with the transaction is always replaced."""
    m = clean_devnet.manifest
    assert m is not None
    chain = min(m.chains, key=lambda c: c.block_time)
    w3 = _w3(chain.rpc_url)
    for k in range(3):
        tx = w3.eth.send_transaction({"from": m.traders[0].address, "to": m.traders[1].address, "value": 777 + k})
        rc = w3.eth.wait_for_transaction_receipt(tx, timeout=10)
        old_hash = w3.eth.get_block(rc["blockNumber"])["hash"]
        out = reorg_from(chain.rpc_url, rc["blockNumber"])
        assert out["fromBlock"] == rc["blockNumber"] and out["depth"] >= 1
        assert w3.eth.get_block(rc["blockNumber"])["hash"] != old_hash
        with pytest.raises(TransactionNotFound):
            w3.eth.get_transaction_receipt(tx)
    with pytest.raises(DevnetError, match="not that high"):
        reorg_from(chain.rpc_url, _height(chain.rpc_url) + 10**6)


def test_reorg_deeper_than_the_chain_is_refused(devnet: Devnet) -> None:
    assert devnet.manifest is not None
    with pytest.raises(DevnetError, match="cannot reorg"):
        reorg(devnet.manifest.chains[0].rpc_url, 10**6)


def test_unknown_chain_is_refused(devnet: Devnet) -> None:
    with pytest.raises(DevnetError, match="unknown chain id"):
        devnet.halt(999_999)


def test_snapshot_revert_restores_state(clean_devnet: Devnet) -> None:
    m = clean_devnet.manifest
    assert m is not None
    c = m.chains[1]
    w3 = _w3(c.rpc_url)
    before = w3.eth.get_balance(m.traders[2].address)
    snaps = clean_devnet.snapshot()
    w3.eth.send_transaction({"from": m.traders[2].address, "to": m.traders[3].address, "value": 10**18})
    time.sleep(c.block_time * 2 + 0.2)
    assert w3.eth.get_balance(m.traders[2].address) < before
    clean_devnet.revert(snaps)
    assert w3.eth.get_balance(m.traders[2].address) == before


def test_revert_drops_transactions_still_pending(clean_devnet: Devnet) -> None:
    # A transaction sent after the snapshot on a halted chain: anvil keeps its mempool
    # across evm_revert, and its nonce is valid again on the reverted state.
    m = clean_devnet.manifest
    assert m is not None
    c = m.chains[2]
    w3 = _w3(c.rpc_url)
    sender, to = m.traders[4].address, m.traders[5].address
    before = w3.eth.get_balance(to)
    snaps = clean_devnet.snapshot()
    clean_devnet.halt(c.chain_id)
    h = w3.eth.send_transaction({"from": sender, "to": to, "value": 10**18})
    clean_devnet.revert(snaps)
    clean_devnet.resume(c.chain_id)
    start = _height(c.rpc_url)
    deadline = time.monotonic() + 30
    while _height(c.rpc_url) < start + 3 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _height(c.rpc_url) >= start + 3
    with pytest.raises(TransactionNotFound):
        w3.eth.get_transaction_receipt(h)
    assert w3.eth.get_balance(to) == before
