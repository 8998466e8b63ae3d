"""Faults: a prover killed mid-proof, a reorg right after a settlement."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from app.client import CrossbookClient
from scripts.devnet.devnet import reorg_from
from tests.integration.pipeline.conftest import manifest_of, wait_for
from tests.integration.pipeline.test_settlement_pipeline import _balance

pytestmark = [pytest.mark.integration, pytest.mark.slow]

A, B = 31002, 31003


def _batches(r: Any, chain: int) -> list[dict[str, Any]]:
    return [json.loads(r.get(k)) for k in r.keys(f"stl:{chain}:batch:*") if not k.endswith(":seq")]


def _history(client: CrossbookClient, oid: str) -> list[str]:
    return [h["state"] for h in client.order(oid)["history"]]


def _stuck_report(r: Any, order_ids: list[str]) -> dict[str, Any]:
    """What a test needs to see when orders do not reach a terminal state: each order, its
    legs' log entries, and every chain's log head and batches."""
    docs = {oid: json.loads(r.get(f"order:{oid}") or "null") for oid in order_ids}
    chains = {A, B}
    return {
        "orders": docs,
        "chains": {
            c: {
                "logNext": r.get(f"log:{c}:next"), "applied": r.get(f"stl:{c}:applied"), "lock": r.get(f"stl:{c}:lock"),
                "legs": r.hgetall(f"log:{c}:legs"),
                "batches": [{k: b.get(k) for k in ("number", "state", "start", "count", "txHash", "block", "reason", "history")}
                            for b in sorted(_batches(r, c), key=lambda b: b["number"])],
            }
            for c in chains
        },
    }


def test_prover_killed_mid_proof_a_new_worker_completes(vault_devnet: Any, clean_devnet: Any, pipeline_api: Any, celery_procs: Any, r: Any) -> None:
    m = manifest_of(vault_devnet)
    client = CrossbookClient(pipeline_api.url)
    t = m.traders[3]
    rec = client.swap(client.quote(A, "WETH", A, "USDC", taker=t.address, sell_amount=10**17), t.private_key)

    def proving() -> int | None:
        for b in _batches(r, A):
            if b["state"] == "cut" and r.exists(f"stl:{A}:proving:{b['number']}"):
                return int(b["number"])
        return None

    n = wait_for(proving, 30, "a proof in progress", interval=0.05)
    celery_procs.kill("prove")  # SIGKILL to the worker's process group, helper included
    time.sleep(0.5)
    assert json.loads(r.get(f"stl:{A}:batch:{n}"))["state"] == "cut"
    celery_procs.worker("prove2", "prove")
    wait_for(lambda: client.order(rec["orderId"])["state"] == "finalized", 120, "finalized after the prover died", interval=0.5)
    assert _history(client, rec["orderId"]) == ["confirmed", "pull_settled", "settled", "finalized"]
    assert "no prover heartbeat; re-queued" in celery_procs.log("settle")
    assert json.loads(r.get(f"stl:{A}:batch:{n}"))["state"] == "final"


def test_reorg_after_settlement_resubmits_and_finalizes_once(vault_devnet: Any, clean_devnet: Any, pipeline_api: Any, celery_procs: Any, r: Any) -> None:
    m = manifest_of(vault_devnet)
    client = CrossbookClient(pipeline_api.url)
    t = m.traders[4]
    usdc_before = _balance(vault_devnet, B, "USDC", t.address)
    rec = client.swap(client.quote(A, "WETH", B, "USDC", taker=t.address, sell_amount=10**17), t.private_key)

    def payout_mined() -> dict[str, Any] | None:
        return next((b for b in _batches(r, B) if b["state"] == "mined"), None)

    b = wait_for(payout_mined, 90, "the payout batch mined on chain B", interval=0.05)
    reorg_from(m.chain(B).rpc_url, int(b["block"]))  # drop the block with the settlement
    wait_for(lambda: client.order(rec["orderId"])["state"] == "finalized", 90, "finalized after the reorg", interval=0.25)
    after = json.loads(r.get(f"stl:{B}:batch:{b['number']}"))
    assert after["state"] == "final"
    assert after.get("reorgs", 0) >= 1 and after["blockHash"] != b["blockHash"]
    # Paid once, finalized once.
    assert _balance(vault_devnet, B, "USDC", t.address) == usdc_before + int(rec["buyAmount"])
    assert _history(client, rec["orderId"]) == ["confirmed", "pull_settled", "settled", "finalized"]
    leg = client.order(rec["orderId"])["legs"][1]
    assert leg["blockHash"] == after["blockHash"] and leg["block"] == after["block"]


def test_payout_stuck_trader_reclaims_and_order_is_refunded(vault_devnet: Any, clean_devnet: Any, pipeline_api: Any, celery_procs: Any, r: Any) -> None:
    from web3 import Web3

    from scripts.devnet.anvil import rpc_call
    from settlement.vault import Order, decode_logs, encode_reclaim, reclaim_proof

    m = manifest_of(vault_devnet)
    client = CrossbookClient(pipeline_api.url)
    t = m.traders[5]
    weth_before = _balance(vault_devnet, A, "WETH", t.address)
    rec = client.swap(client.quote(A, "WETH", B, "USDC", taker=t.address, sell_amount=10**17), t.private_key)
    clean_devnet.halt(B)  # the payout can never be mined
    wait_for(lambda: client.order(rec["orderId"])["state"] == "pull_settled", 60, "the pull settled", interval=0.25)
    assert _balance(vault_devnet, A, "WETH", t.address) == weth_before - 10**17

    doc = json.loads(r.get(f"order:{rec['orderId']}"))
    pull = doc["legs"][0]
    ca = m.chain(A)
    w3 = Web3(Web3.HTTPProvider(ca.rpc_url))
    rc = w3.eth.get_transaction_receipt(pull["txHash"])
    events = decode_logs([{"address": x["address"], "topics": list(x["topics"]), "data": x["data"]} for x in rc["logs"]], ca.contracts["settlement"])
    settled_at = int(w3.eth.get_block(rc["blockNumber"])["timestamp"])
    proof = reclaim_proof(bytes.fromhex(rec["orderId"][2:]), events, settled_at)
    o = doc["order"]
    order = Order(
        o["trader"], int(o["sellChainId"]), o["sellToken"], int(o["sellAmount"]), int(o["buyChainId"]), o["buyToken"],
        int(o["minBuyAmount"]), o["recipient"], int(o["nonce"]), int(o["deadline"]), bytes.fromhex(o["quoteId"][2:]),
    )
    rpc_call(ca.rpc_url, "evm_increaseTime", [3601])  # past the vault's reclaim timeout
    time.sleep(2 * ca.block_time)
    h = w3.eth.send_transaction({"from": t.address, "to": ca.contracts["settlement"], "data": encode_reclaim(order, proof), "gas": 300_000})  # type: ignore[typeddict-item]
    assert w3.eth.wait_for_transaction_receipt(h, timeout=30)["status"] == 1

    wait_for(lambda: client.order(rec["orderId"])["state"] == "refunded", 30, "refunded", interval=0.25)
    st = client.order(rec["orderId"])
    assert "reclaimed" in st["reason"]
    assert [h["state"] for h in st["history"]] == ["confirmed", "pull_settled", "refunded"]
    assert _balance(vault_devnet, A, "WETH", t.address) == weth_before

    def reconciled() -> bool:
        rep = json.loads(r.get(f"stl:{A}:recon") or "{}")
        return rep.get("status") == "ok" and rep.get("at", 0) > time.time() - 5
    wait_for(reconciled, 30, "chain A reconciles after the refund")


def test_redis_killed_mid_batch_every_order_still_finalizes(vault_devnet: Any, clean_devnet: Any, pipeline_api: Any, celery_procs: Any, redis_server: Any, r: Any) -> None:
    m = manifest_of(vault_devnet)
    client = CrossbookClient(pipeline_api.url)
    recs = [
        client.swap(client.quote(A, "WETH", B, "USDC", taker=t.address, sell_amount=10**16), t.private_key)
        for t in (m.traders[0], m.traders[1])
    ]
    wait_for(lambda: any(b["state"] in ("cut", "proved", "signed") for b in _batches(r, A)), 30, "a batch in flight", interval=0.05)
    redis_server.kill()  # SIGKILL; AOF with fsync always
    time.sleep(2)
    redis_server.start()
    states: list[str] = []

    def done() -> bool:
        # From the ledger itself: the API's own Redis reconnect is not under test here.
        states[:] = [json.loads(r.get(f"order:{x['orderId']}"))["state"] for x in recs]
        return all(s == "finalized" for s in states)

    try:
        wait_for(done, 150, "finalized after the Redis restart", interval=1.0)
    except AssertionError:
        print(states, json.dumps(_stuck_report(r, [x["orderId"] for x in recs]), indent=1))
        print(celery_procs.log("settle")[-5000:])
        raise
    rep = wait_for(lambda: (x := json.loads(r.get(f"stl:{A}:recon") or "{}")).get("status") == "ok" and x, 40, "reconcile ok")
    assert rep["applied"] == rep["cursor"]
