"""The quote API over real HTTP, on the real devnet, with the real book adapters."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from web3 import Web3
from web3.exceptions import BlockNotFound

from scripts.build_contracts import load_artifact
from scripts.devnet.devnet import Devnet
from scripts.redis_server import EmbeddedRedis
from tests.conftest import ApiProcess

pytestmark = pytest.mark.integration


def _body(m: Any, sell_chain: int, buy_chain: int, **kw: Any) -> dict[str, Any]:
    return {"sellChainId": sell_chain, "sellToken": "WETH", "buyChainId": buy_chain, "buyToken": "USDC", "taker": m.traders[0].address, **kw}


def _w3(url: str) -> Web3:
    return Web3(Web3.HTTPProvider(url, request_kwargs={"timeout": 10}))


def _wait_version(client: httpx.Client, after: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if client.get("/healthz").json()["bookVersion"] > after:
            return
        time.sleep(0.05)
    raise AssertionError("book did not move")


def _wait_available(client: httpx.Client, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(c["available"] for c in client.get("/healthz").json()["chains"].values()):
            return
        time.sleep(0.1)
    raise AssertionError("chains did not come back")


def _on_chain(w3: Web3, head: dict[str, Any]) -> bool:
    try:
        return "0x" + bytes(w3.eth.get_block(head["height"])["hash"]).hex() == head["blockHash"]
    except BlockNotFound:  # the book is still ahead of a reverted chain
        return False


def _wait_synced(client: httpx.Client, m: Any, timeout: float = 10) -> None:
    """Until the API's book has caught up with every chain's current head."""
    w3s = {str(ch.chain_id): _w3(ch.rpc_url) for ch in m.chains}
    target = {k: w3.eth.block_number for k, w3 in w3s.items()}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        chains = client.get("/healthz").json()["chains"]
        # Same height is not enough after a revert: the block hash must be the chain's.
        if all(chains[k]["available"] and chains[k]["height"] >= h and _on_chain(w3s[k], chains[k]) for k, h in target.items()):
            return
        time.sleep(0.05)
    raise AssertionError("book did not catch up with the chains")


def test_large_trade_splits_across_chains_and_beats_the_best_single_pool(api: Any, devnet: Devnet) -> None:
    m = devnet.manifest
    c = httpx.Client(base_url=api.url)
    body = _body(m, m.chains[0].chain_id, m.chains[1].chain_id, sellAmount=str(400 * 10**18))
    q = c.post("/v1/quote", json=body)
    assert q.status_code == 200, q.text
    doc = q.json()
    chains_used = {leg["chainId"] for leg in doc["route"]}
    assert len(chains_used) >= 2
    assert int(doc["minBuyAmount"]) == int(doc["buyAmount"]) * (10_000 - 50) // 10_000
    best_single = 0
    for ch in m.chains:
        for p in ch.pools:
            if {p.symbol0, p.symbol1} == {"WETH", "USDC"}:
                pool = _w3(ch.rpc_url).eth.contract(address=Web3.to_checksum_address(p.address), abi=load_artifact("ConstantProductPool")["abi"])
                best_single = max(best_single, pool.functions.getAmountOut(ch.tokens["WETH"].address, 400 * 10**18).call())
    assert int(doc["buyAmount"]) > best_single
    assert doc["signer"] == m.operator.address
    # Kept in Redis until it expires.
    # (written behind the reply: within a Redis round trip)
    r = redis.Redis.from_url(api.redis_url)
    deadline = time.monotonic() + 5
    while not r.exists("quote:" + doc["quoteId"]) and time.monotonic() < deadline:
        time.sleep(0.01)
    ttl = r.ttl("quote:" + doc["quoteId"])
    assert 0 < ttl <= 30


def test_quote_signature_recovers_to_the_operator(api: Any, devnet: Devnet) -> None:
    from app.domain.eip712 import Domain, recover
    from app.domain.quote import QuoteTerms

    m = devnet.manifest
    doc = httpx.post(api.url + "/v1/quote", json=_body(m, m.chains[2].chain_id, m.chains[2].chain_id, sellAmount=str(10**18))).json()
    terms = QuoteTerms(
        quote_id=doc["quoteId"], taker=doc["taker"], recipient=doc["recipient"],
        sell_chain_id=doc["sellChainId"], sell_token=doc["sellToken"], sell_amount=int(doc["sellAmount"]),
        buy_chain_id=doc["buyChainId"], buy_token=doc["buyToken"], buy_amount=int(doc["buyAmount"]),
        min_buy_amount=int(doc["minBuyAmount"]), expires_at=doc["expiresAt"], book_version=doc["bookVersion"],
    )
    d = doc["eip712"]["domain"]
    domain = Domain(chain_id=d["chainId"], verifying_contract=d["verifyingContract"])
    assert recover(terms.digest(domain), doc["signature"]) == m.operator.address


@pytest.fixture
def fresh_api(clean_devnet: Devnet, tmp_path: Path) -> Iterator[ApiProcess]:
    """An API with an empty ledger: the shared one holds earlier tests' confirmed orders,
    whose reserved pool trades (rightly) move its book away from the bare chain state."""
    store = EmbeddedRedis(tmp_path / "redis")
    store.start()
    proc = ApiProcess(clean_devnet.manifest_path, store.url, tmp_path)
    try:
        yield proc
    finally:
        proc.stop()
        store.stop()


def test_quoted_legs_pay_exactly_what_the_pools_pay(fresh_api: ApiProcess, clean_devnet: Devnet) -> None:
    m = clean_devnet.manifest
    c = httpx.Client(base_url=fresh_api.url)
    trader = m.traders[3].address
    doc = c.post("/v1/quote", json=_body(m, m.chains[0].chain_id, m.chains[2].chain_id, sellAmount=str(60 * 10**18), taker=trader)).json()
    assert doc["route"], doc
    by_chain: dict[int, list[dict[str, Any]]] = {}
    for leg in doc["route"]:
        by_chain.setdefault(leg["chainId"], []).append(leg)
    for cid, legs in by_chain.items():
        chain = m.chain(cid)
        w3 = _w3(chain.rpc_url)
        clean_devnet.halt(cid)  # execute the legs on exactly the state that was quoted
        for leg in sorted(legs, key=lambda lg: lg["hop"]):
            kind = "ConstantProductPool" if leg["kind"] == "constant_product" else "StableSwapPool"
            pool = w3.eth.contract(address=Web3.to_checksum_address(leg["pool"]), abi=load_artifact(kind)["abi"])
            token = w3.eth.contract(address=Web3.to_checksum_address(leg["tokenIn"]), abi=load_artifact("TestToken")["abi"])
            out_token = w3.eth.contract(address=Web3.to_checksum_address(leg["tokenOut"]), abi=load_artifact("TestToken")["abi"])
            before = out_token.functions.balanceOf(trader).call()
            token.functions.approve(pool.address, int(leg["amountIn"])).transact({"from": trader, "gas": 100_000})
            tx = pool.functions.swap(token.address, int(leg["amountIn"]), 0, trader).transact({"from": trader, "gas": 400_000})
            w3.provider.make_request("evm_mine", [])  # type: ignore[arg-type]
            assert w3.eth.get_transaction_receipt(tx)["status"] == 1
            got = out_token.functions.balanceOf(trader).call() - before
            assert got == int(leg["amountOut"]), (leg, got)
        clean_devnet.resume(cid)
    _wait_available(c)


def test_an_onchain_swap_shows_in_the_next_quote_within_a_block(api: Any, clean_devnet: Devnet) -> None:
    m = clean_devnet.manifest
    chain = next(ch for ch in m.chains if ch.block_time == 1.0)
    c = httpx.Client(base_url=api.url)
    _wait_synced(c, m)
    # Only this chain's pools, so the moved pools are the ones that price the quote.
    elsewhere = [f"{ch.chain_id}:{p.address.lower()}" for ch in m.chains if ch.chain_id != chain.chain_id for p in ch.pools]
    body = _body(m, chain.chain_id, chain.chain_id, sellAmount=str(10**18), excludeSources=elsewhere)
    before = int(c.post("/v1/quote", json=body).json()["buyAmount"])
    w3 = _w3(chain.rpc_url)
    whale = m.traders[4].address
    pools = [p for p in chain.pools if {p.symbol0, p.symbol1} == {"WETH", "USDC"}]
    for p in pools:  # dump WETH into every WETH/USDC pool on the chain: WETH gets cheaper
        pool = w3.eth.contract(address=Web3.to_checksum_address(p.address), abi=load_artifact("ConstantProductPool")["abi"])
        weth = w3.eth.contract(address=Web3.to_checksum_address(chain.tokens["WETH"].address), abi=load_artifact("TestToken")["abi"])
        weth.functions.approve(pool.address, 30 * 10**18).transact({"from": whale, "gas": 100_000})
        pool.functions.swap(weth.address, 30 * 10**18, 0, whale).transact({"from": whale, "gas": 400_000})
    version = c.get("/healthz").json()["bookVersion"]
    rc_block = None
    deadline = time.monotonic() + 5
    while rc_block is None and time.monotonic() < deadline:
        if w3.eth.get_block("latest")["transactions"]:
            rc_block = w3.eth.block_number
        time.sleep(0.05)
    assert rc_block is not None
    _wait_version(c, version)
    # Within one block time of the block that carried the swaps, quotes see them.
    time.sleep(0.2)
    after_doc = c.post("/v1/quote", json=body).json()
    assert {leg["chainId"] for leg in after_doc["route"]} == {chain.chain_id}
    assert after_doc["blocks"][str(chain.chain_id)] >= rc_block
    assert int(after_doc["buyAmount"]) < before


def test_halted_chain_leaves_the_book_and_quotes_say_chain_unavailable(api: Any, clean_devnet: Devnet) -> None:
    m = clean_devnet.manifest
    fast = next(ch for ch in m.chains if ch.block_time == 0.25)
    others = [ch for ch in m.chains if ch.chain_id != fast.chain_id]
    c = httpx.Client(base_url=api.url)
    _wait_available(c)
    clean_devnet.halt(fast.chain_id)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and c.get("/healthz").json()["chains"][str(fast.chain_id)]["available"]:
            time.sleep(0.1)
        r = c.post("/v1/quote", json=_body(m, fast.chain_id, others[0].chain_id, sellAmount=str(10**18)))
        assert r.status_code == 503, r.text
        assert r.json()["error"]["code"] == "CHAIN_UNAVAILABLE"
        assert r.headers.get("retry-after")
        ok = c.post("/v1/quote", json=_body(m, others[0].chain_id, others[1].chain_id, sellAmount=str(300 * 10**18)))
        assert ok.status_code == 200
        assert fast.chain_id not in {leg["chainId"] for leg in ok.json()["route"]}
        book = c.get("/v1/book", params={"base": "WETH", "quote": "USDC"}).json()
        assert fast.chain_id in book["aggregated"]["unavailable"]
    finally:
        clean_devnet.resume(fast.chain_id)
    _wait_available(c)


def test_get_form_chains_assets_book_metrics(api: Any, devnet: Devnet) -> None:
    m = devnet.manifest
    c = httpx.Client(base_url=api.url)
    q = c.get("/v1/quote", params={**_body(m, m.chains[1].chain_id, m.chains[0].chain_id), "sellAmount": str(10**18)})
    assert q.status_code == 200, q.text
    chains = c.get("/v1/chains").json()["chains"]
    assert len(chains) == 3 and all(ch["settlementWindow"]["etaSeconds"] > 0 for ch in chains)
    assets = {a["symbol"]: a for a in c.get("/v1/assets").json()["assets"]}
    assert {d["decimals"] for d in assets["USDC"]["deployments"]} == {6}
    book = c.get("/v1/book", params={"base": "WETH", "quote": "USDC", "levels": 5}).json()
    agg = book["aggregated"]
    assert len(agg["bids"]) == 5 and len(agg["asks"]) == 5
    # Across chains the book may cross (prices differ per chain: that is the arbitrage the
    # router takes); within one chain it never does.
    for ch in book["chains"]:
        assert int(ch["bids"][0]["price"]) < int(ch["asks"][0]["price"])
    assert [int(b["base"]) for b in agg["bids"]] == sorted(int(b["base"]) for b in agg["bids"])
    metrics = c.get("/metrics").text
    assert "crossbook_http_requests_total" in metrics and "crossbook_book_version" in metrics
    # Every route is timed (the quote above was routed by this process).
    routed = next(float(line.split()[-1]) for line in metrics.splitlines() if line.startswith("crossbook_route_seconds_count"))
    assert routed >= 1


def test_same_asset_across_chains_moves_inventory_one_to_one(api: Any, devnet: Devnet) -> None:
    m = devnet.manifest
    r = httpx.post(api.url + "/v1/quote", json={**_body(m, m.chains[0].chain_id, m.chains[1].chain_id, sellAmount="5000000"), "sellToken": "USDC"})
    assert r.status_code == 200, r.text
    assert r.json()["buyAmount"] == "5000000" and r.json()["route"] == []
