"""Maker legs and netted pool legs on the real stack: the chain follows the book.

Real devnet (vaults), real API, real Celery workers, real Redis: orders routed through a
maker's ladder settle with MAKER_IN/MAKER_OUT legs that move the maker's on-chain balances
by exactly the fill; orders through pools in both directions net into one POOL leg per
pool whose trade moves the pool's reserves by exactly the net; a maker who revoked its
allowance fails its MAKER_IN, the batch settles anyway and the loss is booked.
"""

from __future__ import annotations

import asyncio
import json
import time
from fractions import Fraction
from typing import Any

import httpx
import pytest
from web3 import Web3

from app.client import CrossbookClient
from app.services.book_service import BookService
from settlement.netting import PoolState, expected_out, flows_from_routes, net_flows
from settlement.rebalance import maker_fills
from tests.integration.pipeline.conftest import manifest_of, wait_for, wait_reconciled

pytestmark = [pytest.mark.integration, pytest.mark.slow]

A, B = 31002, 31003
E18 = 10**18


def _w3(net: Any, chain: int) -> Web3:
    return Web3(Web3.HTTPProvider(manifest_of(net).chain(chain).rpc_url, request_kwargs={"timeout": 30}))


def _balance(net: Any, chain: int, symbol: str, holder: str) -> int:
    c = manifest_of(net).chain(chain)
    data = Web3.keccak(text="balanceOf(address)")[:4] + bytes(12) + bytes.fromhex(holder[2:])
    return int.from_bytes(_w3(net, chain).eth.call({"to": c.tokens[symbol].address, "data": data}), "big")


def _reserves(net: Any, chain: int, pool: str, block: int) -> tuple[int, int]:
    out = _w3(net, chain).eth.call({"to": Web3.to_checksum_address(pool), "data": Web3.keccak(text="getReserves()")[:4]}, block)
    return int.from_bytes(out[:32], "big"), int.from_bytes(out[32:64], "big")


def _approve(net: Any, chain: int, symbol: str, owner: str, amount: int) -> None:
    c = manifest_of(net).chain(chain)
    w3 = _w3(net, chain)
    data = Web3.keccak(text="approve(address,uint256)")[:4] + bytes(12) + bytes.fromhex(c.contracts["settlement"][2:]) + amount.to_bytes(32, "big")
    h = w3.eth.send_transaction({"from": owner, "to": c.tokens[symbol].address, "data": data, "gas": 100_000})
    assert w3.eth.wait_for_transaction_receipt(h, timeout=60)["status"] == 1


def _doc(r: Any, oid: str) -> dict[str, Any]:
    return json.loads(r.get(f"order:{oid}"))


def _batches(r: Any, chain: int) -> list[dict[str, Any]]:
    return [json.loads(r.get(k)) for k in r.keys(f"stl:{chain}:batch:*") if not k.endswith(":seq")]


def _aux(r: Any, chain: int, kind: str) -> list[dict[str, Any]]:
    legs = {int(k): json.loads(v) for k, v in r.hgetall(f"log:{chain}:legs").items()}
    return [x for _, x in sorted(legs.items()) if x["kind"] == kind]


def _dump(celery: Any) -> None:
    keep = ("cut", "netting", "mined", "final", "ALERT", "ERROR", "WARNING", "Traceback", "Error", "MAKER", "POOL")
    print("\n".join(x for x in celery.log("settle").splitlines() if any(k in x for k in keep))[-12000:])
    print(celery.log("prove")[-2000:])


def test_pool_trades_in_both_directions_net_into_one_pool_leg(vault_devnet: Any, clean_devnet: Any, pipeline_api: Any, celery_procs: Any, r: Any) -> None:
    m = manifest_of(vault_devnet)
    client = CrossbookClient(pipeline_api.url)
    t1, t2 = m.traders[3], m.traders[4]
    # Same-chain orders on A in opposite directions; their pulls settle in one batch. WETH
    # is dearest on A's pools (devnet skew), so a WETH sale routes there; 10 WETH moves A's
    # (reserved) price below B's, so the WETH purchase that follows routes to A's pools too.
    sell = client.swap(client.quote(A, "WETH", A, "USDC", taker=t1.address, sell_amount=10 * E18), t1.private_key)
    # The book shows a confirmation's pool trades within BookService.FLUSH_SECONDS (they
    # join it in batches); a quote sooner is priced without them, and the purchase would
    # route as if the sale had not moved A's pools.
    time.sleep(4 * BookService.FLUSH_SECONDS)
    buy = client.swap(client.quote(A, "USDC", A, "WETH", taker=t2.address, sell_amount=3000 * 10**6), t2.private_key)
    ids = {sell["orderId"], buy["orderId"]}
    chains = set()
    for oid in ids:
        route = _doc(r, oid)["route"]
        print("route", oid[:10], [(t["sourceId"], t["tokenIn"], t["amountIn"], t["amountOut"]) for t in route])
        chains |= {int(t["sourceId"].split(":")[0]) for t in route if len(t["sourceId"].split(":")) == 2}
    assert chains, "the orders must route through pools"

    def netted() -> list[dict[str, Any]] | None:
        # Every batch that netted our orders' flows, once its pool legs are mined.
        found = [b for c in chains for b in _batches(r, c) if ids & set(b.get("netting", {}).get("orders", []))]
        seen = set().union(*(b["netting"]["orders"] for b in found)) if found else set()
        # A batch's pool trades are written as its outcome is applied, its block just after
        # (its move to `mined`): the checks below read both.
        if not ids <= seen or any(b["netting"]["poolLegs"] and not (b.get("poolTrades") and "block" in b) for b in found):
            return None
        return found

    try:
        wait_for(lambda: all(_doc(r, o)["state"] == "finalized" for o in ids), 240, "both orders finalized", interval=1.0)
        found = wait_for(netted, 120, "the netted pool legs mined", interval=1.0)
    except AssertionError:
        for c in (A, B, 31001):
            for b in _batches(r, c):
                print(c, b["number"], b["state"], [x["kind"] for x in b["legs"]], b.get("netting"), b.get("poolTrades"))
        _dump(celery_procs)
        raise
    # The two orders traded opposite directions on A's pools: some of it matched.
    assert any(b["chainId"] == A and b["netting"]["ratio"] > 0 and ids <= set(b["netting"]["orders"]) for b in found), [b["netting"] for b in found]
    executed = 0
    for batch in found:
        c, report = batch["chainId"], batch["netting"]
        # The netting is exactly that of the pool trades of the orders it names.
        routes = [t for oid in report["orders"] for t in _doc(r, oid)["route"]]
        pool_tokens = {f"{c}:{p.address.lower()}": (p.symbol0, p.symbol1) for p in m.chain(c).pools}
        expect = net_flows(flows_from_routes(routes, pool_tokens, chain_id=c))
        assert report["ratio"] == round(expect.ratio, 6)
        assert [(x["pool"], x["tokenIn"], x["amount"]) for x in report["poolLegs"]] == [
            (t.pool, t.token_in, str(t.amount_in)) for t in expect.pool_trades
        ]
        assert len(batch.get("poolTrades", [])) == len(expect.pool_trades)
        pools = {f"{c}:{p.address.lower()}": p for p in m.chain(c).pools}
        dec = {s: t.decimals for s, t in m.chain(c).tokens.items()}
        for t in batch.get("poolTrades", []):
            assert t["ok"], t
            p = pools[t["pool"]]
            before = _reserves(vault_devnet, c, p.address, batch["block"] - 1)
            after = _reserves(vault_devnet, c, p.address, batch["block"])
            i_in = 0 if t["tokenIn"] == p.symbol0 else 1
            amount_in, amount_out = int(t["amountIn"]), int(t["amountOut"])
            # The pool moved by exactly the net trade, at exactly its math twin's price.
            assert after[i_in] - before[i_in] == amount_in
            assert before[1 - i_in] - after[1 - i_in] == amount_out
            state = PoolState(p.kind, p.symbol0, p.symbol1, before[0], before[1], p.fee_bps, p.amp, dec[p.symbol0], dec[p.symbol1])
            assert amount_out == expected_out(state, t["tokenIn"], amount_in) >= int(t["minOut"]) > 0
            executed += 1
    assert executed >= 1
    # The operator view shows each batch's netting ratio and the pool legs it executed.
    from settlement.batching import chain_status

    rows = {(c, x["number"]): x for c in chains for x in chain_status(r, c, recent=50)["batches"]}
    for b in found:
        row = rows[(b["chainId"], b["number"])]
        assert row["nettingRatio"] == b["netting"]["ratio"] and len(row["poolTrades"]) == len(b.get("poolTrades", []))
    print("netting:", [(b["chainId"], b["number"], b["netting"]["ratio"], b.get("poolTrades")) for b in found])
    print("gas:", [(b["chainId"], [x["kind"] for x in b["legs"]], b.get("gasUsed")) for b in found])
    wait_reconciled(r, sorted(chains | {A}))


async def _wait(pred: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        await asyncio.sleep(1.0)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


async def _swap(http: CrossbookClient, chain: int, trader: Any) -> dict[str, Any]:
    """Sell 0.2 WETH for USDC on `chain`; quote again if the book moved under the quote (a
    previous confirmation joins the book within ~50 ms)."""
    from app.client import ApiCallError

    for _ in range(5):
        try:
            q = await asyncio.to_thread(http.quote, chain, "WETH", chain, "USDC", taker=trader.address, sell_amount=2 * 10**17)
            return await asyncio.to_thread(http.swap, q, trader.private_key)
        except ApiCallError as e:
            if "QUOTE_STALE" not in str(e):
                raise
            await asyncio.sleep(0.5)
    raise AssertionError("the book kept moving under the quotes")


async def _post_bid(api_url: str, key: str, chain: int, premium: Fraction, size: int) -> tuple[Any, str]:
    """Log a maker in and post a WETH bid `premium` above the chain's pool price, so the
    router fills a small WETH sell at the maker's level."""
    from scripts.demo_maker import MakerClient, price_str

    async with httpx.AsyncClient(base_url=api_url) as http:
        book = (await http.get("/v1/book", params={"base": "WETH", "quote": "USDC", "levels": 3, "stepBps": 10})).json()
    best = next(c for c in book["chains"] if c["chainId"] == chain)
    mid = Fraction(int(best["bids"][0]["price"]), E18) / Fraction(999, 1000)
    client = await MakerClient.open(api_url.replace("http://", "ws://") + "/v1/ws/mm", key)
    ref = await client.send("levels", {"chainId": chain, "base": "WETH", "quote": "USDC", "bids": [[price_str(mid * premium), str(size)]],
                                       "asks": [], "expiresAt": int(time.time()) + 60})
    ack = await client.recv("ack", "error")
    assert ack["type"] == "ack" and ack["payload"]["ref"] == ref, ack
    return client, ack["payload"]["sourceId"]


async def test_maker_legs_move_the_makers_funds_and_a_revoked_maker_is_booked(vault_devnet: Any, clean_devnet: Any, pipeline_api: Any, celery_procs: Any, r: Any) -> None:
    m = manifest_of(vault_devnet)
    http = CrossbookClient(pipeline_api.url)
    good, bad = m.makers[0], m.makers[1]
    t1, t2 = m.traders[5], m.traders[6]
    # The router fills across chains by price: one maker's bid at a time is above every
    # pool, so each order fills at the maker meant for it.
    before = {(c, s, who): _balance(vault_devnet, c, s, who) for c in (A, B) for s in ("WETH", "USDC") for who in (good.address, bad.address)}
    c_good, sid_good = await _post_bid(pipeline_api.url, good.private_key, A, Fraction(102, 100), 2 * E18)
    c_bad: Any = None
    try:
        o1 = await _swap(http, A, t1)
        pulled = await c_good.send("levels", {"chainId": A, "base": "WETH", "quote": "USDC", "bids": [], "asks": [], "expiresAt": int(time.time()) + 60})
        ack = await c_good.recv("ack", "error")
        assert ack["type"] == "ack" and ack["payload"]["ref"] == pulled, ack
        c_bad, sid_bad = await _post_bid(pipeline_api.url, bad.private_key, B, Fraction(101, 100), 2 * E18)
        o2 = await _swap(http, B, t2)
        d1, d2 = _doc(r, o1["orderId"]), _doc(r, o2["orderId"])
        f1, f2 = maker_fills(d1), maker_fills(d2)
        assert [f.source_id for f in f1] == [sid_good] and [f.source_id for f in f2] == [sid_bad], (d1["route"], d2["route"])
        # The second maker takes its allowance back before anything settles.
        await asyncio.to_thread(_approve, vault_devnet, B, "USDC", bad.address, 0)

        def maker_out_final() -> bool:
            outs = [x for x in _aux(r, A, "maker_out") if x["orderId"] == o1["orderId"]]
            return bool(outs) and json.loads(r.get(f"stl:{A}:leg:{outs[0]['index']}") or "{}").get("state") == "final"

        def bad_failed() -> bool:
            ins = [x for x in _aux(r, B, "maker_in") if x["orderId"] == o2["orderId"]]
            return bool(ins) and json.loads(r.get(f"stl:{B}:leg:{ins[0]['index']}") or "{}").get("state") in ("failed", "failed_final")

        try:
            await _wait(lambda: all(_doc(r, o["orderId"])["state"] == "finalized" for o in (o1, o2)), 240, "both orders finalized")
            await _wait(maker_out_final, 240, "the good maker's MAKER_OUT final")
            await _wait(bad_failed, 120, "the revoked maker's MAKER_IN failed")
        except AssertionError:
            _dump(celery_procs)
            raise
        f = f1[0]
        # The good maker sold USDC and bought WETH on A: exactly the fill, to the wei.
        assert f.sold_symbol == "USDC" and f.bought_symbol == "WETH"
        assert _balance(vault_devnet, A, "USDC", good.address) == before[(A, "USDC", good.address)] - f.sold_amount
        assert _balance(vault_devnet, A, "WETH", good.address) == before[(A, "WETH", good.address)] + f.bought_amount
        # The revoked maker: nothing moved, no MAKER_OUT, the loss booked, the trader paid.
        for s in ("USDC", "WETH"):
            assert _balance(vault_devnet, B, s, bad.address) == before[(B, s, bad.address)]
        assert not [x for x in _aux(r, B, "maker_out") if x["orderId"] == o2["orderId"]]
        usdc = list(m.assets).index("USDC")
        assert int(r.hget(f"stl:{B}:losses", str(usdc)) or 0) >= f2[0].sold_amount
        losses = [json.loads(x) for x in r.lrange("stl:losses", 0, -1)]
        assert any(x.get("kind") == "maker_in" and x["orderId"] == o2["orderId"] and x["amount"] == str(f2[0].sold_amount) for x in losses)
        assert "ALERT" in celery_procs.log("settle") and "MAKER_IN" in celery_procs.log("settle")
        # Makers were told: delivered/paid/final for the good one, failed with the reason for the other.
        good_notes = [x["payload"] for x in c_good.received if x["type"] == "settlement" and x["payload"]["orderId"] == o1["orderId"]]
        assert {(n.get("leg"), n["status"]) for n in good_notes} >= {("maker_in", "settled"), ("maker_out", "settled"), ("maker_in", "final")}
        bad_notes = [x["payload"] for x in c_bad.received if x["type"] == "settlement" and x["payload"]["orderId"] == o2["orderId"]]
        assert any(n["status"] == "failed" and "MAKER_IN failed" in n.get("reason", "") for n in bad_notes), bad_notes
        wait_reconciled(r, [A, B])
    finally:
        await c_good.close()
        if c_bad is not None:
            await c_bad.close()
