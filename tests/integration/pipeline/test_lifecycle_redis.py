"""The lifecycle on a real Redis: payout legs appended gapless while the API's confirm
script appends to the same log, holds released exactly, replays change nothing."""

from __future__ import annotations

import json
import threading
from typing import Any

import redis

from app.services.ledger import CONFIRM_LUA
from settlement import lifecycle
from settlement.batching import leg_from_json
from settlement.prover_gate import API_LOAD_KEY
from settlement.vault import Pulled, PullFailed, PullFailure

SELL, BUY = 1, 2
TOKEN_S, TOKEN_B = "0x" + "aa" * 20, "0x" + "bb" * 20
ASSETS = {"WETH": 0, "USDC": 1}


def _confirm(r: redis.Redis, script: Any, k: int, sell: int, buy: int, trader: str) -> tuple[str, int]:
    oid = "0x" + k.to_bytes(32, "big").hex()
    order = {
        "trader": trader, "sellChainId": sell, "sellToken": TOKEN_S, "sellAmount": str(10**18 + k),
        "buyChainId": buy, "buyToken": TOKEN_B, "minBuyAmount": "1000", "recipient": trader,
        "nonce": str(k), "deadline": 2**40, "quoteId": "0x" + "cd" * 32,
    }
    doc = {
        "id": oid, "orderHash": oid, "state": "confirmed", "reason": "", "order": order, "signature": "0x",
        "sellSymbol": "WETH", "buySymbol": "USDC", "buyAmount": "2000", "confirmedAt": 1, "route": [],
        "legs": [
            {"kind": "pull", "chainId": sell, "logIndex": "__INDEX__", "leafHash": "0", "state": "pending"},
            {"kind": "payout", "chainId": buy, "logIndex": None, "amount": "2000", "state": "waiting_for_pull"},
        ],
        "history": [{"state": "confirmed", "at": 1}],
    }
    leg = {"index": "__INDEX__", "kind": "pull", "orderId": oid, "account": trader, "token": 0, "amount": order["sellAmount"], "minAmount": "0", "orderRef": str(k), "leafHash": "0"}
    t = trader.lower()
    keys = [f"nonce:{sell}:{t}:{k}", f"held:{sell}:{TOKEN_S}:{t}", f"invheld:{buy}:{TOKEN_B}", f"log:{sell}:next", f"log:{sell}:legs", f"order:{oid}", f"trader:{t}"]
    status, index = script(keys=keys, args=[oid, order["sellAmount"], str(10**30), str(10**30), "2000", str(10**30), json.dumps(doc), json.dumps(leg), "1", f"orders:{trader.lower()}"])
    assert status == "OK", status
    return oid, int(index)


def test_payouts_append_gapless_against_concurrent_confirms_and_replays_are_noops(redis_url: str) -> None:
    r = redis.Redis.from_url(redis_url, decode_responses=True)
    script = r.register_script(CONFIRM_LUA)
    trader = "0x" + "11" * 20
    orders = [_confirm(r, script, k, SELL, BUY, trader) for k in range(1, 21)]
    held_key = f"held:{SELL}:{TOKEN_S}:{trader}"
    held_before = int(r.get(held_key))
    legs = [json.loads(r.hget(f"log:{SELL}:legs", str(i))) for _, i in orders]
    # Leg 5 fails on chain; the others are pulled.
    events: list[Any] = [Pulled(bytes.fromhex(oid[2:]), i) for (oid, i) in orders if i != 5]
    events.append(PullFailed(bytes.fromhex(orders[5][0][2:]), 5, PullFailure.TRANSFER_FAILED))
    outs = lifecycle.outcomes(0, legs, events)
    info = lifecycle.MinedInfo(SELL, 1, "0xabc", 100, "0xh1")

    # Meanwhile the API confirms orders that sell on the buy chain (its log grows too).
    stop = threading.Event()
    other = redis.Redis.from_url(redis_url, decode_responses=True)
    other_script = other.register_script(CONFIRM_LUA)
    api_indices: list[int] = []

    def api() -> None:
        k = 1000
        while not stop.is_set() and k < 1200:
            api_indices.append(_confirm(other, other_script, k, BUY, SELL, "0x" + "22" * 20)[1])
            k += 1

    th = threading.Thread(target=api)
    th.start()
    lifecycle.apply_mined(r, info, outs, ASSETS)
    stop.set()
    th.join()

    nxt = int(r.get(f"log:{BUY}:next"))
    entries = {int(k): json.loads(v) for k, v in r.hgetall(f"log:{BUY}:legs").items()}
    assert sorted(entries) == list(range(nxt)), "buy chain log has gaps or extra entries"
    payout_idx = sorted(i for i, e in entries.items() if e["kind"] == "payout")
    assert len(payout_idx) == 19 and sorted(set(api_indices) | set(payout_idx)) == list(range(nxt))
    for oid, i in orders:
        doc = json.loads(r.get(f"order:{oid}"))
        if i == 5:
            assert doc["state"] == "failed" and "TRANSFER_FAILED" in doc["reason"]
            assert doc["legs"][1]["logIndex"] is None
            continue
        assert doc["state"] == "pull_settled"
        e = entries[doc["legs"][1]["logIndex"]]
        assert e["orderId"] == oid and e["kind"] == "payout" and e["amount"] == "2000" and e["minAmount"] == "1000"
        leg_from_json(e)  # a well-formed leg
    # All twenty holds released exactly (the failed one too).
    assert held_before == sum(10**18 + k for k in range(1, 21))
    assert int(r.get(held_key)) == 0
    expect = int(r.hget(f"stl:{SELL}:expect", "0"))
    assert expect == sum(10**18 + k for k in range(1, 21) if k != 6)

    # A replay (redelivered task) changes nothing; a re-mine elsewhere only moves blocks.
    # (An API process of another test may still publish its load: not the ledger's state.)
    snap = {k: r.dump(k) for k in r.keys("*") if k != API_LOAD_KEY}
    lifecycle.apply_mined(r, info, outs, ASSETS)
    assert {k: r.dump(k) for k in r.keys("*") if k != API_LOAD_KEY} == snap
    lifecycle.apply_mined(r, lifecycle.MinedInfo(SELL, 1, "0xabc", 103, "0xh2"), outs, ASSETS)
    assert int(r.get(f"log:{BUY}:next")) == nxt
    assert json.loads(r.get(f"order:{orders[0][0]}"))["legs"][0]["block"] == 103
    assert int(r.hget(f"stl:{SELL}:expect", "0")) == expect

    # The payouts settle, then both sides finalize.
    pl = [entries[i] for i in payout_idx]
    outs_b = [lifecycle.LegOutcome(entries[i]["index"], entries[i], True) for i in payout_idx]
    lifecycle.apply_mined(r, lifecycle.MinedInfo(BUY, 7, "0xdef", 200, "0xh3"), outs_b, ASSETS)
    assert int(r.get(f"invheld:{BUY}:{TOKEN_B}")) == 0
    assert int(r.hget(f"stl:{BUY}:expect", "1")) == -2000 * 19
    lifecycle.apply_final(r, SELL, 1, legs, 110)
    lifecycle.apply_final(r, BUY, 7, pl, 230)
    for oid, i in orders:
        doc = json.loads(r.get(f"order:{oid}"))
        assert doc["state"] == ("failed" if i == 5 else "finalized")
    assert r.scard(f"stl:{SELL}:confirms") == 19
