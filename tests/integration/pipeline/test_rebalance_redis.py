"""Maker and pool legs on a real Redis: MAKER_IN legs and pool flows follow a settled pull
(gapless after its payout), flows net into POOL legs at cut time, outcomes move the
expected balances exactly, a failed MAKER_IN is booked and gets no MAKER_OUT, replays
change nothing."""

from __future__ import annotations

import json
import time
from typing import Any

import redis

from app.domain.amm import constant_product as cp
from app.manifest import PoolInfo
from app.services.ledger import CONFIRM_LUA
from app.services.makers import NOTICE_CHANNEL
from settlement import lifecycle, rebalance
from settlement.batching import cut_batch, leg_from_json
from settlement.prover_gate import API_LOAD_KEY
from settlement.vault import MakerLeg, Paid, PoolTrade, Pulled, PullFailed, PullFailure
from settlement.window import policy_for

SELL, BUY = 1, 2
TOKEN_S, TOKEN_B = "0x" + "aa" * 20, "0x" + "bb" * 20
ASSETS = {"WETH": 0, "USDC": 1}
MAKER = "0x" + "ee" * 20
POOL = "0x" + "cd" * 20
SID = f"{SELL}:{POOL}"
R_USDC, R_WETH = 3_000_000 * 10**6, 1000 * 10**18


def _confirm(r: Any, k: int, sell_sym: str, route: list[dict[str, str]], trader: str) -> tuple[str, int]:
    script = r.register_script(CONFIRM_LUA)
    oid = "0x" + k.to_bytes(32, "big").hex()
    buy_sym = "USDC" if sell_sym == "WETH" else "WETH"
    order = {"trader": trader, "sellChainId": SELL, "sellToken": TOKEN_S, "sellAmount": str(10**18 + k), "buyChainId": BUY,
             "buyToken": TOKEN_B, "minBuyAmount": "1000", "recipient": trader, "nonce": str(k), "deadline": 2**40, "quoteId": "0x" + "cd" * 32}
    doc = {"id": oid, "orderHash": oid, "state": "confirmed", "reason": "", "order": order, "signature": "0x", "sellSymbol": sell_sym,
           "buySymbol": buy_sym, "buyAmount": "2000", "confirmedAt": 1, "route": route, "rfq": None,
           "legs": [{"kind": "pull", "chainId": SELL, "logIndex": "__INDEX__", "leafHash": "0", "state": "pending"},
                    {"kind": "payout", "chainId": BUY, "logIndex": None, "amount": "2000", "state": "waiting_for_pull"}],
           "history": [{"state": "confirmed", "at": 1}]}
    leg = {"index": "__INDEX__", "kind": "pull", "orderId": oid, "account": trader, "token": ASSETS[sell_sym], "amount": order["sellAmount"],
           "minAmount": "0", "orderRef": str(k), "leafHash": "0"}
    t = trader.lower()
    keys = [f"nonce:{SELL}:{t}:{k}", f"held:{SELL}:{TOKEN_S}:{t}", f"invheld:{BUY}:{TOKEN_B}", f"log:{SELL}:next", f"log:{SELL}:legs", f"order:{oid}", f"trader:{t}"]
    status, index = script(keys=keys, args=[oid, order["sellAmount"], str(10**30), str(10**30), "2000", str(10**30), json.dumps(doc), json.dumps(leg), "1", f"orders:{t}"])
    assert status == "OK", status
    return oid, int(index)


def _log(r: Any, chain: int) -> dict[int, dict[str, Any]]:
    return dict(sorted((int(k), json.loads(v)) for k, v in r.hgetall(f"log:{chain}:legs").items()))


def _notices(sub: Any) -> list[dict[str, Any]]:
    out = []
    while (m := sub.get_message(timeout=0.2)) is not None:
        if m["type"] == "message":
            out.append(json.loads(m["data"]))
    return out


def test_maker_legs_and_netted_pool_legs(redis_url: str) -> None:
    r: Any = redis.Redis.from_url(redis_url, decode_responses=True)
    sub = r.pubsub()
    sub.subscribe(NOTICE_CHANNEL)
    trader = "0x" + "11" * 20
    mm = f"{BUY}:mm:{MAKER}:WETH-USDC"
    # Order 1 sells WETH: half to a maker's bid on the buy chain, half into the pool; order 2
    # sells USDC into the same pool (opposite direction); order 3 fills only at the maker.
    o1 = _confirm(r, 1, "WETH", [{"sourceId": mm, "tokenIn": "WETH", "amountIn": "5", "amountOut": "15000"},
                                  {"sourceId": SID, "tokenIn": "WETH", "amountIn": str(2 * 10**18), "amountOut": str(5900 * 10**6)}], trader)
    o2 = _confirm(r, 2, "USDC", [{"sourceId": SID, "tokenIn": "USDC", "amountIn": str(3000 * 10**6), "amountOut": str(99 * 10**16)}], trader)
    o3 = _confirm(r, 3, "WETH", [{"sourceId": mm, "tokenIn": "WETH", "amountIn": "7", "amountOut": "21000"}], trader)
    pulls = [json.loads(r.hget(f"log:{SELL}:legs", str(i))) for _, i in (o1, o2, o3)]
    outs = lifecycle.outcomes(0, pulls, [Pulled(bytes.fromhex(oid[2:]), i) for oid, i in (o1, o2, o3)])
    lifecycle.apply_mined(r, lifecycle.MinedInfo(SELL, 1, "0xa1", 10, "0xh1"), outs, ASSETS)

    # Buy chain: payout, MAKER_IN of order 1, payout, payout, MAKER_IN of order 3: gapless.
    buy_log = _log(r, BUY)
    assert sorted(buy_log) == list(range(int(r.get(f"log:{BUY}:next")))) == list(range(5))
    assert [x["kind"] for x in buy_log.values()] == ["payout", "maker_in", "payout", "payout", "maker_in"]
    mi1 = buy_log[1]
    assert (mi1["account"], mi1["token"], mi1["amount"], mi1["outToken"], mi1["outAmount"]) == (MAKER, 1, "15000", 0, "5")
    for e in buy_log.values():
        leg_from_json(e)  # well-formed legs
    assert json.loads(r.get(f"order:{o1[0]}"))["makerLegs"] == [{"kind": "maker_in", "chainId": BUY, "logIndex": 1, "maker": MAKER}]
    assert r.hlen(f"stl:{SELL}:flows") == 2

    # Cut on the sell chain: the flows net into one POOL leg that the batch takes.
    info = PoolInfo(POOL, "constant_product", TOKEN_B, TOKEN_S, "USDC", "WETH", 30)
    hook = rebalance.PoolNetting(r, SELL, {SID: info}, {"USDC": 6, "WETH": 18}, ASSETS, lambda a: (R_USDC, R_WETH), tolerance=100)
    assert hook.pending_since() is not None
    batch = cut_batch(r, policy_for(SELL, 1.0, 3), (3, 0), now=time.time() + 60, hook=hook)
    assert batch is not None and [x["kind"] for x in batch["legs"]] == ["pool"]
    pool = batch["legs"][0]
    # WETH in 2e18, out 0.99e18 → the pool gets the 1.01e18 WETH surplus for USDC.
    assert (pool["account"], pool["token"], pool["amount"], pool["tokenOut"]) == (POOL, 0, str(101 * 10**16), "USDC")
    exp = cp.get_amount_out(101 * 10**16, R_WETH, R_USDC, 30)
    assert (pool["expectedOut"], pool["minOut"]) == (str(exp), str(exp * 9900 // 10000))
    assert batch["netting"]["ratio"] > 0 and batch["netting"]["orders"] == sorted([o1[0], o2[0]])
    assert r.hlen(f"stl:{SELL}:flows") == 0 and hook.pending_since() is None and hook.before_cut() is None

    # The buy chain's batch: MAKER_IN of order 1 delivered, order 3's maker revoked.
    _notices(sub)
    binfo = lifecycle.MinedInfo(BUY, 4, "0xb1", 20, "0xh2")
    bouts = lifecycle.outcomes(0, [buy_log[i] for i in range(5)], [*[Paid(i) for i in (0, 2, 3)], MakerLeg(1, True), MakerLeg(4, False)])
    lifecycle.apply_mined(r, binfo, bouts, ASSETS)
    buy_log = _log(r, BUY)
    assert [x["kind"] for x in buy_log.values()] == ["payout", "maker_in", "payout", "payout", "maker_in", "maker_out"]
    mo = buy_log[5]
    assert (mo["account"], mo["token"], mo["amount"], mo["orderId"], mo["makerIn"]) == (MAKER, 0, "5", o1[0], 1)
    # Orders 1 and 3 are paid USDC (token 1), order 2 WETH (token 0); the maker delivered USDC.
    assert int(r.hget(f"stl:{BUY}:expect", "1")) == -2 * 2000 + 15000
    assert int(r.hget(f"stl:{BUY}:expect", "0")) == -2000
    assert int(r.hget(f"stl:{BUY}:losses", "1")) == 21000
    (loss,) = [json.loads(x) for x in r.lrange("stl:losses", 0, -1)]
    assert (loss["kind"], loss["orderId"], loss["amount"], loss["notPaid"]) == ("maker_in", o3[0], "21000", {"token": 0, "amount": "7"})
    notes = [(n["payload"]["orderId"], n["payload"]["leg"], n["payload"]["status"]) for n in _notices(sub)]
    assert sorted(notes) == sorted([(o1[0], "maker_in", "settled"), (o3[0], "maker_in", "failed")])

    # Replays change nothing.
    # (An API process of another test may still publish its load: not the ledger's state.)
    snap = {k: r.dump(k) for k in r.keys("*") if k != API_LOAD_KEY}
    lifecycle.apply_mined(r, binfo, bouts, ASSETS)
    assert {k: r.dump(k) for k in r.keys("*") if k != API_LOAD_KEY} == snap

    # The pool leg mined: −in, +out; then the MAKER_OUT; then everything final.
    lifecycle.apply_mined(r, lifecycle.MinedInfo(SELL, batch["number"], "0xa2", 30, "0xh3"), lifecycle.outcomes(3, batch["legs"], [PoolTrade(3, exp)]), ASSETS)
    assert int(r.hget(f"stl:{SELL}:expect", "0")) == 2 * (10**18) + 4 - 101 * 10**16
    assert int(r.hget(f"stl:{SELL}:expect", "1")) == 10**18 + 2 + exp
    assert json.loads(r.get(f"stl:{SELL}:batch:{batch['number']}"))["poolTrades"][0]["amountOut"] == str(exp)
    lifecycle.apply_mined(r, lifecycle.MinedInfo(BUY, 5, "0xb2", 40, "0xh4"), lifecycle.outcomes(5, [mo], [MakerLeg(5, True)]), ASSETS)
    assert int(r.hget(f"stl:{BUY}:expect", "0")) == -2000 - 5
    lifecycle.apply_final(r, BUY, 4, [buy_log[i] for i in range(5)], 60)
    lifecycle.apply_final(r, BUY, 5, [mo], 60)
    assert json.loads(r.get(f"stl:{BUY}:leg:1"))["state"] == "final"
    assert json.loads(r.get(f"stl:{BUY}:leg:4"))["state"] == "failed_final"
    assert json.loads(r.get(f"stl:{BUY}:leg:5"))["state"] == "final"
    finals = {(n["payload"]["orderId"], n["payload"]["leg"], n["payload"]["status"]) for n in _notices(sub)}
    assert {(o1[0], "maker_out", "settled"), (o1[0], "maker_in", "final"), (o1[0], "maker_out", "final")} <= finals


def test_failed_pull_appends_no_maker_leg_and_frees_the_maker(redis_url: str) -> None:
    r: Any = redis.Redis.from_url(redis_url, decode_responses=True)
    sub = r.pubsub()
    sub.subscribe(NOTICE_CHANNEL)
    _notices(sub)
    oid, i = _confirm(r, 9, "WETH", [{"sourceId": f"{BUY}:mm:{MAKER}:WETH-USDC", "tokenIn": "WETH", "amountIn": "5", "amountOut": "15000"},
                                      {"sourceId": SID, "tokenIn": "WETH", "amountIn": "9", "amountOut": "27000"}], "0x" + "12" * 20)
    pull = json.loads(r.hget(f"log:{SELL}:legs", str(i)))
    outs = lifecycle.outcomes(i, [pull], [PullFailed(bytes.fromhex(oid[2:]), i, PullFailure.TRANSFER_FAILED)])
    lifecycle.apply_mined(r, lifecycle.MinedInfo(SELL, 1, "0xa1", 10, "0xh1"), outs, ASSETS)
    assert json.loads(r.get(f"order:{oid}"))["state"] == "failed"
    assert int(r.get(f"log:{BUY}:next") or 0) == 0 and r.hlen(f"stl:{SELL}:flows") == 0
    notes = [(n["maker"], n["payload"]["orderId"], n["payload"]["status"]) for n in _notices(sub)]
    assert notes == [(MAKER, oid, "cancelled")]


def test_failed_pool_trade_is_booked_not_retried_until_requeued(redis_url: str) -> None:
    r: Any = redis.Redis.from_url(redis_url, decode_responses=True)
    oid, i = _confirm(r, 11, "WETH", [{"sourceId": SID, "tokenIn": "WETH", "amountIn": str(10**18), "amountOut": str(2990 * 10**6)}], "0x" + "13" * 20)
    pull = json.loads(r.hget(f"log:{SELL}:legs", str(i)))
    lifecycle.apply_mined(r, lifecycle.MinedInfo(SELL, 1, "0xa1", 10, "0xh1"), lifecycle.outcomes(i, [pull], [Pulled(bytes.fromhex(oid[2:]), i)]), ASSETS)
    info = PoolInfo(POOL, "constant_product", TOKEN_B, TOKEN_S, "USDC", "WETH", 30)
    hook = rebalance.PoolNetting(r, SELL, {SID: info}, {"USDC": 6, "WETH": 18}, ASSETS, lambda a: (R_USDC, R_WETH), tolerance=0)
    report = hook.before_cut()
    assert report is not None and report["ratio"] == 0 and len(report["poolLegs"]) == 1
    leg = _log(r, SELL)[report["poolLegs"][0]["index"]]
    expect_before = r.hgetall(f"stl:{SELL}:expect")
    # The pool paid less than the minimum (it moved): PoolTrade(i, 0), nothing moved.
    lifecycle.apply_mined(r, lifecycle.MinedInfo(SELL, 2, "0xa2", 20, "0xh2"), lifecycle.outcomes(leg["index"], [leg], [PoolTrade(leg["index"], 0)]), ASSETS)
    assert r.hgetall(f"stl:{SELL}:expect") == expect_before
    (failed,) = [json.loads(x) for x in r.lrange(f"stl:{SELL}:poolfailed", 0, -1)]
    assert (failed["index"], failed["amount"], failed["minOut"]) == (leg["index"], str(10**18), leg["minOut"])
    assert json.loads(r.get(f"stl:{SELL}:leg:{leg['index']}"))["state"] == "failed"
    # Not retried by itself: no flow is pending, the next cut appends nothing.
    assert hook.pending_since() is None and hook.before_cut() is None
    # The operator puts it back once; the next cut nets it again.
    assert rebalance.requeue_failed_pool(r, SELL, 0) and not rebalance.requeue_failed_pool(r, SELL, 0)
    again = hook.before_cut()
    assert again is not None and [(x["tokenIn"], x["amount"]) for x in again["poolLegs"]] == [("WETH", str(10**18))]
