"""A backlog settles in one transaction: more than one maximum batch of orders is confirmed
through the real API before any worker runs; then a settle worker, two prove workers and
beat start. The workers run with a maximum batch of 16 legs
(`CROSSBOOK_SETTLEMENT_MAX_BATCH`), so 20 orders make a backlog: the group logic is the
same at 64, and proofs of 16 and 4 slots cost a quarter of 64 and 8. The sell chain's backlog is cut as a group of consecutive batches,
proven separately, and settled by one `settleMany`; every order ends finalized, balances
move exactly as the receipts say, and both chains reconcile."""

from __future__ import annotations

import json
from collections import defaultdict
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
from web3 import Web3

from app.client import CrossbookClient
from settlement.batching import chain_status
from settlement.vault import BatchSettled, decode_logs
from tests.integration.pipeline.conftest import Celery, manifest_of, wait_for, wait_reconciled

pytestmark = [pytest.mark.integration, pytest.mark.slow]

A, B = 31002, 31003  # 1 s / 3 blocks and 0.25 s / 20 blocks
MAX_BATCH = 16  # the workers' CROSSBOOK_SETTLEMENT_MAX_BATCH
N_ORDERS = 20  # > MAX_BATCH: more than one maximum batch of pulls on A (and payouts on B)


def _balance(net: Any, chain: int, symbol: str, holder: str) -> int:
    c = manifest_of(net).chain(chain)
    w3 = Web3(Web3.HTTPProvider(c.rpc_url))
    data = Web3.keccak(text="balanceOf(address)")[:4] + bytes(12) + bytes.fromhex(holder[2:])
    return int.from_bytes(w3.eth.call({"to": c.tokens[symbol].address, "data": data}), "big")


def test_backlog_settles_as_a_group_in_one_transaction(
    vault_devnet: Any, clean_devnet: Any, pipeline_api: Any, redis_url: str, r: Any, tmp_path: Path
) -> None:
    m = manifest_of(vault_devnet)
    client = CrossbookClient(pipeline_api.url, timeout=30)
    traders = list(m.traders)
    before = _balances(vault_devnet, traders)
    orders = _backlog(pipeline_api, client, traders, r)
    celery = _workers(vault_devnet, redis_url, tmp_path)
    try:
        _all_finalized_and_reconciled(client, orders, r)
    except AssertionError:
        print(celery.log("settle")[-8000:])
        print(celery.log("prove")[-3000:], celery.log("prove2")[-3000:])
        raise
    finally:
        celery.stop()

    # One transaction on A settled at least two batches: the group's members share it,
    # and its receipt has a BatchSettled per member, consecutive from the first.
    batches = [json.loads(r.get(k)) for k in r.keys(f"stl:{A}:batch:*") if not k.endswith(":seq")]
    groups = [b for b in batches if len(b.get("group") or []) >= 2 and b["state"] == "final"]
    assert groups, [(b["number"], b["start"], b["count"], b["state"], b.get("group")) for b in batches]
    lead = min(groups, key=lambda b: b["number"])
    members = sorted((b for b in batches if b["number"] in lead["group"]), key=lambda b: b["start"])
    assert len(members) == len(lead["group"]) >= 2
    assert len({b["txHash"] for b in members}) == 1 and all(b["state"] == "final" for b in members)
    assert sum(b["count"] for b in members) > MAX_BATCH
    assert max(b["count"] for b in members) == MAX_BATCH
    for prev, nxt in pairwise(members):
        assert nxt["start"] == prev["start"] + prev["count"] and nxt["oldHead"] == prev["newHead"]
    w3 = Web3(Web3.HTTPProvider(m.chain(A).rpc_url))
    rc = w3.eth.get_transaction_receipt(lead["txHash"])
    assert rc["status"] == 1
    logs = [{"address": x["address"], "topics": list(x["topics"]), "data": bytes(x["data"])} for x in rc["logs"]]
    settled = [e for e in decode_logs(logs, m.chain(A).contracts["settlement"]) if isinstance(e, BatchSettled)]
    assert [(e.start_index, e.count, str(e.new_head)) for e in settled] == [
        (b["start"], b["count"], b["newHead"]) for b in members
    ]
    print("group on A:", [(b["number"], b["start"], b["count"], b.get("capacity"), b.get("proofSeconds")) for b in members],
          "gas", rc["gasUsed"])
    b_groups = {tuple(b["group"]) for b in (json.loads(r.get(k)) for k in r.keys(f"stl:{B}:batch:*") if not k.endswith(":seq")) if b.get("group")}
    print("groups on B:", sorted(b_groups))

    _check_money(vault_devnet, client, r, traders, orders, before)


def _balances(net: Any, traders: list[Any]) -> dict[str, tuple[int, int]]:
    return {t.address: (_balance(net, A, "WETH", t.address), _balance(net, B, "USDC", t.address)) for t in traders}


def _backlog(api: Any, client: CrossbookClient, traders: list[Any], r: Any) -> list[tuple[str, int, dict[str, Any]]]:
    """N_ORDERS cross-chain orders A -> B through the API, before any worker runs."""
    api.wait_ready(60)
    orders = []
    for k in range(N_ORDERS):
        t = traders[k % len(traders)]
        q = client.quote(A, "WETH", B, "USDC", taker=t.address, sell_amount=10**16 + k)
        orders.append((t.address, 10**16 + k, client.swap(q, t.private_key)))
    assert int(r.get(f"log:{A}:next")) >= N_ORDERS  # the backlog is there before any worker
    return orders


def _workers(net: Any, redis_url: str, tmp_path: Path) -> Celery:
    celery = Celery(net.manifest_path, redis_url, tmp_path)
    celery.env["CROSSBOOK_SETTLEMENT_MAX_BATCH"] = str(MAX_BATCH)
    celery.worker("settle", "settle")
    celery.worker("prove", "prove")
    celery.worker("prove2", "prove")
    celery.beat()
    return celery


def _check_money(net: Any, client: CrossbookClient, r: Any, traders: list[Any], orders: list[tuple[str, int, dict[str, Any]]],
                 before: dict[str, tuple[int, int]]) -> None:
    """Balances moved exactly as the receipts say (each trader's sells on A, buys on B,
    once), every leg final, no backlog, both chains reconciled."""
    sold: dict[str, int] = defaultdict(int)
    bought: dict[str, int] = defaultdict(int)
    for trader, amount, o in orders:
        st = client.order(o["orderId"])
        assert [leg["state"] for leg in st["legs"]] == ["final", "final"]
        sold[trader] += amount
        bought[trader] += int(o["buyAmount"])
    for t in traders:
        weth_a, usdc_b = before[t.address]
        assert _balance(net, A, "WETH", t.address) == weth_a - sold[t.address]
        assert _balance(net, B, "USDC", t.address) == usdc_b + bought[t.address]
    for c in (A, B):
        status = chain_status(r, c)
        assert status["backlog"] == 0 and status["reconcile"]["status"] == "ok", status


def test_reorged_group_is_resent_as_the_same_transaction(
    vault_devnet: Any, clean_devnet: Any, pipeline_api: Any, redis_url: str, r: Any, tmp_path: Path
) -> None:
    """B's payout group is reorged out right after it is mined: every member goes back to
    signed, the same raw transaction is sent again, every member is applied again from
    the new block; every order finalizes, paid exactly once."""
    m = manifest_of(vault_devnet)
    client = CrossbookClient(pipeline_api.url, timeout=30)
    traders = list(m.traders)
    before = _balances(vault_devnet, traders)
    orders = _backlog(pipeline_api, client, traders, r)
    celery = _workers(vault_devnet, redis_url, tmp_path)
    try:

        def group_mined() -> list[dict[str, Any]] | None:
            for b in _batches(r, B):
                if len(b.get("group") or []) >= 2 and b["state"] == "mined":
                    members = [json.loads(r.get(f"stl:{B}:batch:{n}")) for n in b["group"]]
                    if all(x["state"] == "mined" for x in members):
                        return sorted(members, key=lambda x: x["start"])
            return None

        members = wait_for(group_mined, 900, "a group mined on chain B", interval=0.05)
        from scripts.devnet.devnet import reorg_from

        reorg_from(m.chain(B).rpc_url, int(members[0]["block"]))  # drop its block

        _all_finalized_and_reconciled(client, orders, r)
    except AssertionError:
        print(celery.log("settle")[-8000:])
        raise
    finally:
        celery.stop()
    after = [json.loads(r.get(f"stl:{B}:batch:{b['number']}")) for b in members]
    assert all(a["state"] == "final" and a.get("reorgs", 0) >= 1 for a in after), [
        {k: a.get(k) for k in ("number", "state", "reorgs", "block", "blockHash", "txHash", "group")} for a in members + after
    ]
    assert {a["txHash"] for a in after} == {members[0]["txHash"]}  # the same transaction
    assert len({a["blockHash"] for a in after}) == 1 and after[0]["blockHash"] != members[0]["blockHash"]
    print("reorged group on B:", [(a["number"], a["start"], a["count"], a["block"]) for a in after])
    _check_money(vault_devnet, client, r, traders, orders, before)


def _batches(r: Any, chain: int) -> list[dict[str, Any]]:
    return [json.loads(r.get(k)) for k in r.keys(f"stl:{chain}:batch:*") if not k.endswith(":seq")]


def _all_finalized_and_reconciled(client: CrossbookClient, orders: list[Any], r: Any) -> None:
    def done() -> bool:
        states = [client.order(o["orderId"])["state"] for _, _, o in orders]
        assert not set(states) & {"failed", "refunded"}, states
        return all(s == "finalized" for s in states)

    wait_for(done, 900, "every order finalized", interval=0.5)
    # Also the POOL leg netting the orders' pool trades on A, cut after their pulls
    # settled: every log leg applied, nothing left to net, a fresh clean reconciliation.
    wait_reconciled(r, [A, B], timeout=120)
