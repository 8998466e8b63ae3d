"""Faults the pipeline must ride out, each ending with every confirmed order terminal and
every balance moved exactly as the receipts say (nothing paid twice or lost), and the
vaults reconciled to the wei:

- the `settle` worker killed (SIGKILL) with its batch's transaction sent but not mined,
  the transaction then mined while no worker runs, a new worker taking over;
- the API killed (SIGKILL) under a stream of swaps and restarted on the same Redis;
- a chain halted for many of its windows while the others keep settling, then resumed.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from web3 import Web3

from app.client import ApiCallError, CrossbookClient
from settlement.window import policy_for
from tests.conftest import ApiProcess
from tests.integration.pipeline.conftest import (
    assert_balances_moved,
    balances,
    finalized_path_ok,
    ledger_orders,
    leg_state,
    manifest_of,
    wait_for,
    wait_reconciled,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

C, A, B = 31001, 31002, 31003  # 2 s / 12 blocks, 1 s / 3 blocks, 0.25 s / 20 blocks
TERMINAL = ("finalized", "failed", "refunded")
LATE = 10**10  # deadlines far out: a halted chain must not expire the orders under test


def _units(net: Any, chain: int, symbol: str, amount: str) -> int:
    return int(Decimal(amount) * 10 ** manifest_of(net).chain(chain).tokens[symbol].decimals)


def _swap(client: CrossbookClient, net: Any, trader: Any, sell: tuple[int, str, str], buy: tuple[int, str]) -> dict[str, Any]:
    q = client.quote(sell[0], sell[1], buy[0], buy[1], taker=trader.address, sell_amount=_units(net, sell[0], sell[1], sell[2]))
    return client.swap(q, trader.private_key, deadline=LATE)


def _batches(r: Any, chain: int) -> list[dict[str, Any]]:
    return [json.loads(r.get(k)) for k in r.keys(f"stl:{chain}:batch:*") if not k.endswith(":seq")]


def _states(r: Any, ids: list[str]) -> list[str]:
    return [json.loads(r.get(f"order:{i}"))["state"] for i in ids]


def _all_finalized(r: Any, ids: list[str], timeout: float, what: str, logs: Any = None) -> None:
    try:
        wait_for(lambda: all(s == "finalized" for s in _states(r, ids)), timeout, what, interval=0.5)
    except AssertionError:
        print("states:", _states(r, ids))
        if logs is not None:
            print(logs.log("settle")[-6000:])
        raise


def test_settle_worker_killed_with_its_transaction_in_the_mempool(vault_devnet: Any, clean_devnet: Any, pipeline_api: Any, celery_procs: Any, r: Any) -> None:
    m = manifest_of(vault_devnet)
    client = CrossbookClient(pipeline_api.url)
    t0, t1 = m.traders[0], m.traders[1]
    holders = [t0.address, t1.address]
    before = balances(vault_devnet, holders)
    recs = [
        _swap(client, vault_devnet, t0, (A, "WETH", "0.1"), (B, "USDC")),
        _swap(client, vault_devnet, t1, (A, "WETH", "0.05"), (A, "USDC")),
    ]
    ids = [x["orderId"] for x in recs]
    # Stop A's block producer while the batch is being proven: the settle transaction is
    # signed, stored and sent, and then sits in the mempool.
    cut = wait_for(lambda: next((b for b in _batches(r, A) if b["state"] == "cut"), None), 60, "a batch cut on A", interval=0.05)
    clean_devnet.halt(A)
    key = f"stl:{A}:batch:{cut['number']}"
    signed = wait_for(lambda: (d := json.loads(r.get(key)))["state"] == "signed" and d, 120, "the batch signed and sent", interval=0.1)
    w3 = Web3(Web3.HTTPProvider(m.chain(A).rpc_url))
    pending = w3.eth.get_transaction(signed["txHash"])  # in the node's pool ...
    assert pending["blockNumber"] is None and pending["nonce"] == signed["nonce"]
    time.sleep(1.0)  # ... while the worker keeps following it
    celery_procs.kill("settle")  # SIGKILL, whatever it was doing

    # The transaction is mined while no settle worker runs: on chain, not in the ledger.
    clean_devnet.resume(A)
    rc = w3.eth.wait_for_transaction_receipt(signed["txHash"], timeout=60)
    assert rc["status"] == 1
    time.sleep(2.0)
    assert json.loads(r.get(key))["state"] == "signed"
    assert [leg_state(r, i, "pull") for i in ids] == ["pending", "pending"]  # the ledger has not seen it

    celery_procs.worker("settle2", "settle")
    _all_finalized(r, ids, 180, "every order finalized after the settle worker was replaced", celery_procs)
    doc = json.loads(r.get(key))
    # Sent once, mined once, in the transaction stored before the kill; no nonce skipped.
    assert doc["txHash"] == signed["txHash"] and doc["block"] == rc["blockNumber"]
    assert [h["state"] for h in doc["history"]] == ["cut", "proved", "signed", "mined", "final"]
    # The finalized pulls' confirmation goes out next: its nonce is taken before it is sent,
    # so the two agree once it is in the node's pool (a skipped nonce never would).
    operator = Web3.to_checksum_address(m.operator.address)
    wait_for(lambda: int(r.get(f"stl:{A}:nonce")) == w3.eth.get_transaction_count(operator, "pending"), 30,
             "the stored nonce and the node's agree", interval=0.2)
    orders = ledger_orders(r)
    assert set(orders) == set(ids)
    for i in ids:
        assert finalized_path_ok(orders[i]), orders[i]["history"]
    assert_balances_moved(before, balances(vault_devnet, holders), list(orders.values()))
    wait_reconciled(r, [A, B])


def test_api_killed_under_a_stream_of_swaps_every_receipted_order_settles(vault_devnet: Any, clean_devnet: Any, pipeline_api: Any, celery_procs: Any, r: Any, redis_url: str, tmp_path: Path) -> None:
    m = manifest_of(vault_devnet)
    traders = list(m.traders[2:5])
    holders = [t.address for t in traders]
    before = balances(vault_devnet, holders)
    routes = [((A, "WETH", "0.01"), (B, "USDC")), ((B, "USDC", "25"), (A, "WETH")), ((A, "WETH", "0.02"), (A, "USDC")), ((B, "USDT", "30"), (B, "USDC"))]
    (tmp_path / "api1").mkdir()
    (tmp_path / "api2").mkdir()
    api = ApiProcess(vault_devnet.manifest_path, redis_url, tmp_path / "api1")
    url = {"now": api.url}
    receipts: list[dict[str, Any]] = []
    dropped: list[str] = []
    stop = threading.Event()

    def stream(k: int, trader: Any) -> None:
        n = 0
        while not stop.is_set():
            sell, buy = routes[(k + n) % len(routes)]
            n += 1
            try:
                receipts.append(_swap(CrossbookClient(url["now"], timeout=15), vault_devnet, trader, sell, buy))
            except (httpx.HTTPError, ApiCallError) as e:  # the API died under the request
                dropped.append(f"{type(e).__name__}: {e}")
                time.sleep(0.2)

    threads = [threading.Thread(target=stream, args=(k, t), daemon=True) for k, t in enumerate(traders)]
    for th in threads:
        th.start()
    try:
        wait_for(lambda: len(receipts) >= 9, 120, "swaps confirmed by the first API")
        os.killpg(api.proc.pid, signal.SIGKILL)  # mid-stream: some requests die with it
        api.proc.wait(10)
        first = len(receipts)
        api = ApiProcess(vault_devnet.manifest_path, redis_url, tmp_path / "api2")  # same Redis
        url["now"] = api.url
        wait_for(lambda: len(receipts) >= first + 9, 120, "swaps confirmed by the restarted API")
    finally:
        stop.set()
        for th in threads:
            th.join(30)
    try:
        ids = [x["orderId"] for x in receipts]
        assert len(set(ids)) == len(ids)
        _all_finalized(r, ids, 240, "every receipted order finalized", celery_procs)
        # Orders confirmed whose answer was lost with the API are in the ledger too: they
        # must end terminal as well, and they count in the balances.
        orders = ledger_orders(r)
        assert set(ids) <= set(orders)
        wait_for(lambda: all(d["state"] in TERMINAL for d in ledger_orders(r).values()), 120, "every ledger order terminal")
        orders = ledger_orders(r)
        client = CrossbookClient(api.url)
        for i in ids[:3] + ids[-3:]:  # the restarted API serves orders of both lives
            assert client.order(i)["state"] == "finalized"
        assert_balances_moved(before, balances(vault_devnet, holders), list(orders.values()))
        wait_reconciled(r, [A, B])
        print(f"receipts {len(receipts)} ({first} before the kill), ledger orders {len(orders)}, dropped requests {len(dropped)}: {dropped[:3]}")
    finally:
        api.stop()


def test_chain_halted_for_many_windows_others_keep_settling_then_it_catches_up(vault_devnet: Any, clean_devnet: Any, pipeline_api: Any, celery_procs: Any, r: Any) -> None:
    m = manifest_of(vault_devnet)
    client = CrossbookClient(pipeline_api.url)
    t = m.traders
    holders = [x.address for x in t[:6]]
    before = balances(vault_devnet, holders)
    # Orders that need A: pulls on A (same-chain, cross-chain) and a payout on A.
    on_a = [
        _swap(client, vault_devnet, t[0], (A, "WETH", "0.05"), (A, "USDC")),
        _swap(client, vault_devnet, t[1], (A, "WETH", "0.05"), (B, "USDC")),
        _swap(client, vault_devnet, t[2], (B, "USDC", "40"), (A, "WETH")),
    ]
    clean_devnet.halt(A)
    halted_at = time.monotonic()
    window = policy_for(A, m.chain(A).block_time, m.chain(A).finality_depth).max_wait
    # Meanwhile the other chains keep settling: B to finality, C (12 blocks of 2 s to
    # finality) at least through both legs mined.
    others = [
        _swap(client, vault_devnet, t[3], (B, "WETH", "0.05"), (B, "USDC")),
        _swap(client, vault_devnet, t[4], (C, "WETH", "0.05"), (B, "DAI")),
    ]
    _all_finalized(r, [others[0]["orderId"]], 180, "B settling while A is halted", celery_procs)
    wait_for(lambda: _states(r, [others[1]["orderId"]])[0] in ("settled", "finalized"), 180, "C and B settling while A is halted")
    wait_for(lambda: leg_state(r, on_a[2]["orderId"], "pull") in ("settled", "final"), 60, "the pull on B of the order paid on A")
    time.sleep(max(0.0, halted_at + 6 * window - time.monotonic()))
    assert time.monotonic() - halted_at >= 6 * window
    assert [leg_state(r, x["orderId"], "pull") for x in on_a[:2]] == ["pending", "pending"]
    assert leg_state(r, on_a[2]["orderId"], "payout") not in ("settled", "final")
    head = Web3(Web3.HTTPProvider(m.chain(A).rpc_url)).eth.block_number
    assert all(b["state"] in ("cut", "proved", "signed") for b in _batches(r, A)), _batches(r, A)
    print(f"A halted {time.monotonic() - halted_at:.1f}s ({(time.monotonic() - halted_at) / window:.1f} windows of {window}s) at block {head}")

    clean_devnet.resume(A)
    ids = [x["orderId"] for x in on_a + others]
    _all_finalized(r, ids, 240, "A's orders finalized after the resume", celery_procs)
    orders = ledger_orders(r)
    assert set(orders) == set(ids)
    assert all(finalized_path_ok(d) for d in orders.values()), [d["history"] for d in orders.values()]
    assert_balances_moved(before, balances(vault_devnet, holders), list(orders.values()))
    wait_reconciled(r, [C, A, B])
