"""The fast tier's lifecycle on a real Redis, orders confirmed by the API's own Lua script:
payout enqueued at the sell chain's tick (once), payout before pull, the exposure cap, a
failed pull booked as the operator's loss, the per-trader cap under concurrent decisions,
the loss budget turning the tier off and the operator turning it on."""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from typing import Any

import pytest
import redis

from app.services.ledger import CONFIRM_LUA
from settlement import lifecycle
from settlement.operator import fast_tier_report, set_fast_tier
from settlement.tier import (
    FastTierLimits,
    Switch,
    TierRules,
    exposure_key,
    fast_losses_key,
    losses_key,
    switch_key,
    trader_exposure_key,
    usd6,
)
from settlement.vault import Paid, Pulled, PullFailed, PullFailure

SELL, BUY = 1, 2
TOKEN_S, TOKEN_B = "0x" + "aa" * 20, "0x" + "bb" * 20
ASSETS = {"WETH": 0, "USDC": 1}
# USDC on BUY has 6 decimals: 90 USDC = 90 usd6-dollars. Cap 100 per order, 250 outstanding.
RULES = TierRules({"USDC": usd6(1), "WETH": usd6(3000)}, {SELL: FastTierLimits(usd6(100), usd6(250))},
                  {(BUY, "USDC"): 6, (SELL, "USDC"): 6, (SELL, "WETH"): 18, (BUY, "WETH"): 18})
TRADER = "0x" + "11" * 20


def _confirm(r: redis.Redis, k: int, buy_amount: int, *, buy: int = BUY, trader: str = TRADER, sell: int = SELL) -> tuple[str, int]:
    oid = "0x" + k.to_bytes(32, "big").hex()
    order = {
        "trader": trader, "sellChainId": sell, "sellToken": TOKEN_S, "sellAmount": str(10**16 + k),
        "buyChainId": buy, "buyToken": TOKEN_B, "minBuyAmount": str(buy_amount - 10), "recipient": trader,
        "nonce": str(k), "deadline": 2**40, "quoteId": "0x" + "cd" * 32,
    }
    doc = {
        "id": oid, "orderHash": oid, "state": "confirmed", "reason": "", "order": order, "signature": "0x",
        "sellSymbol": "WETH", "buySymbol": "USDC", "buyAmount": str(buy_amount), "confirmedAt": 1, "route": [],
        "legs": [
            {"kind": "pull", "chainId": sell, "logIndex": "__INDEX__", "leafHash": "0", "state": "pending"},
            {"kind": "payout", "chainId": buy, "logIndex": None, "amount": str(buy_amount), "state": "waiting_for_pull"},
        ],
        "history": [{"state": "confirmed", "at": 1}],
        "rfq": None,
    }
    leg = {"index": "__INDEX__", "kind": "pull", "orderId": oid, "account": trader, "token": 0,
           "amount": order["sellAmount"], "minAmount": "0", "orderRef": str(k), "leafHash": "0"}
    t = trader.lower()
    keys = [f"nonce:{sell}:{t}:{k}", f"held:{sell}:{TOKEN_S}:{t}", f"invheld:{buy}:{TOKEN_B}", f"log:{sell}:next",
            f"log:{sell}:legs", f"order:{oid}", f"trader:{t}"]
    script = r.register_script(CONFIRM_LUA)
    status, index = script(keys=keys, args=[oid, str(order["sellAmount"]), str(10**30), str(10**30), str(buy_amount),
                                            str(10**30), json.dumps(doc), json.dumps(leg), "1", f"orders:{t}"])
    assert status == "OK", status
    return oid, int(index)


def _doc(r: redis.Redis, oid: str) -> dict[str, Any]:
    return json.loads(r.get(f"order:{oid}"))  # type: ignore[arg-type]


def _log(r: redis.Redis, chain: int) -> dict[int, dict[str, Any]]:
    return {int(k): json.loads(v) for k, v in r.hgetall(f"log:{chain}:legs").items()}


def _pull_outcome(r: redis.Redis, oid: str, index: int, *, ok: bool, batch: int, tx: str) -> None:
    leg = _log(r, SELL)[index]
    ev: Any = Pulled(bytes.fromhex(oid[2:]), index << 8) if ok else PullFailed(bytes.fromhex(oid[2:]), index, PullFailure.TRANSFER_FAILED)
    outs = lifecycle.outcomes(index, [leg], [ev])
    lifecycle.apply_mined(r, lifecycle.MinedInfo(SELL, batch, tx, 100 + batch, f"0xh{batch}"), outs, ASSETS)


def _payout_outcome(r: redis.Redis, oid: str, *, batch: int, tx: str) -> dict[str, Any]:
    i = _doc(r, oid)["legs"][1]["logIndex"]
    leg = _log(r, BUY)[i]
    outs = lifecycle.outcomes(i, [leg], [Paid(i)])
    lifecycle.apply_mined(r, lifecycle.MinedInfo(BUY, batch, tx, 200 + batch, f"0xb{batch}"), outs, ASSETS)
    return leg


def test_payout_first_then_pull_finalizes_once_and_closes_the_pull(redis_url: str) -> None:
    r = redis.Redis.from_url(redis_url, decode_responses=True)
    oid, pull_index = _confirm(r, 1, 90_000_000)
    # The buy chain's log has other legs already: the payout takes the next index.
    r.set(f"log:{BUY}:next", "7")
    r.hset(f"log:{BUY}:legs", mapping={str(i): json.dumps({"index": i, "kind": "pull"}) for i in range(7)})
    assert lifecycle.enqueue_fast_payouts(r, SELL, RULES, ASSETS) == 1
    assert lifecycle.enqueue_fast_payouts(r, SELL, RULES, ASSETS) == 0  # once
    doc = _doc(r, oid)
    assert doc["tier"] == "fast" and doc["state"] == "confirmed" and doc["tierValueUsd6"] == str(90_000_000)
    assert doc["legs"][1]["logIndex"] == 7 and doc["legs"][1]["state"] == "pending"
    assert int(r.get(f"log:{BUY}:next") or 0) == 8 and _log(r, BUY)[7]["orderId"] == oid
    assert int(r.get(exposure_key(SELL)) or 0) == 90_000_000
    # The buy chain settles first: paid before the pull.
    payout = _payout_outcome(r, oid, batch=1, tx="0xp1")
    doc = _doc(r, oid)
    assert doc["state"] == "settled" and doc["legs"][0]["state"] == "pending"
    assert int(r.get(f"invheld:{BUY}:{TOKEN_B}") or 0) == 0
    assert int(r.hget(f"stl:{BUY}:expect", "1") or 0) == -90_000_000
    # Then the pull: the order stays settled, no second payout, exposure released.
    _pull_outcome(r, oid, pull_index, ok=True, batch=1, tx="0xa1")
    _pull_outcome(r, oid, pull_index, ok=True, batch=1, tx="0xa1")  # a replay
    doc = _doc(r, oid)
    assert doc["state"] == "settled" and doc["legs"][0]["state"] == "settled"
    assert int(r.get(f"log:{BUY}:next") or 0) == 8
    assert int(r.get(exposure_key(SELL)) or 0) == 0 and doc["exposureOpen"] is False
    assert int(r.get(f"held:{SELL}:{TOKEN_S}:{TRADER}") or 0) == 0
    assert int(r.hget(f"stl:{SELL}:expect", "0") or 0) == 10**16 + 1
    # Both final (payout's batch first): finalized, the pull queued for confirmPayouts.
    lifecycle.apply_final(r, BUY, 1, [payout], 300)
    assert _doc(r, oid)["state"] == "settled"
    lifecycle.apply_final(r, SELL, 1, [_log(r, SELL)[pull_index]], 300)
    doc = _doc(r, oid)
    assert [h["state"] for h in doc["history"]] == ["confirmed", "settled", "finalized"]
    assert r.smembers(f"stl:{SELL}:confirms") == {str(pull_index << 8)}


def test_exposure_cap_sends_the_overflow_standard_and_standard_pays_once(redis_url: str) -> None:
    r = redis.Redis.from_url(redis_url, decode_responses=True)
    small = [_confirm(r, k, 90_000_000) for k in (1, 2, 3)]  # 90 + 90 fit under 250, the third does not
    large = _confirm(r, 4, 100_000_001)  # above the per-order cap
    same_chain = _confirm(r, 5, 1_000_000, buy=SELL)
    assert lifecycle.enqueue_fast_payouts(r, SELL, RULES, ASSETS) == 2
    tiers = [_doc(r, oid)["tier"] for oid, _ in [*small, large, same_chain]]
    assert tiers == ["fast", "fast", "standard", "standard", "standard"]
    assert "exceed" in _doc(r, small[2][0])["tierReason"] and "above" in _doc(r, large[0])["tierReason"]
    assert int(r.get(exposure_key(SELL)) or 0) == 180_000_000 <= usd6(250)
    assert int(r.get(f"log:{BUY}:next") or 0) == 2
    # A fast pull settles: its exposure is free again for the next order.
    _pull_outcome(r, small[0][0], small[0][1], ok=True, batch=1, tx="0xa1")
    assert int(r.get(exposure_key(SELL)) or 0) == 90_000_000
    later = _confirm(r, 6, 90_000_000)
    assert lifecycle.enqueue_fast_payouts(r, SELL, RULES, ASSETS) == 1 and _doc(r, later[0])["tier"] == "fast"
    # Standard orders get their payout when the pull settles, exactly once.
    for oid, i in (small[2], large):
        _pull_outcome(r, oid, i, ok=True, batch=2, tx="0xa2")
        _pull_outcome(r, oid, i, ok=True, batch=2, tx="0xa2")
        assert _doc(r, oid)["state"] == "pull_settled"
    payouts = [e["orderId"] for e in _log(r, BUY).values() if e["kind"] == "payout"]
    assert sorted(payouts) == sorted([small[0][0], small[1][0], later[0], small[2][0], large[0]])
    assert sorted(_log(r, BUY)) == list(range(int(r.get(f"log:{BUY}:next") or 0)))  # gapless


def test_failed_pull_after_fast_payout_is_booked_as_operator_loss(redis_url: str) -> None:
    r = redis.Redis.from_url(redis_url, decode_responses=True)
    (a, ia), (b, ib) = _confirm(r, 1, 90_000_000), _confirm(r, 2, 80_000_000)
    assert lifecycle.enqueue_fast_payouts(r, SELL, RULES, ASSETS) == 2
    # a: the pull fails before the payout is mined; b: after.
    _pull_outcome(r, a, ia, ok=False, batch=1, tx="0xa1")
    pay_b = _payout_outcome(r, b, batch=1, tx="0xp1")
    _pull_outcome(r, b, ib, ok=False, batch=2, tx="0xa2")
    _pull_outcome(r, b, ib, ok=False, batch=2, tx="0xa2")  # a replay books nothing twice
    da = _doc(r, a)
    assert da["state"] == "confirmed" and da["legs"][0]["state"] == "failed" and da["legs"][1]["state"] == "pending"
    assert "operator's loss" in da["reason"] and da["operatorLoss"]["amount"] == "90000000"
    assert int(r.get(f"invheld:{BUY}:{TOKEN_B}") or 0) == 90_000_000  # a's payout still to come
    pay_a = _payout_outcome(r, a, batch=2, tx="0xp2")
    assert int(r.get(f"held:{SELL}:{TOKEN_S}:{TRADER}") or 0) == 0
    assert int(r.get(f"invheld:{BUY}:{TOKEN_B}") or 0) == 0
    assert int(r.get(exposure_key(SELL)) or 0) == 0
    assert int(r.hget(losses_key(BUY), "1") or 0) == 170_000_000
    assert [json.loads(x)["orderId"] for x in r.lrange("stl:losses", 0, -1)] == [a, b]
    # The ledger expects exactly what moved: payouts left BUY's vault, nothing entered SELL's.
    assert int(r.hget(f"stl:{BUY}:expect", "1") or 0) == -170_000_000
    assert int(r.hget(f"stl:{SELL}:expect", "0") or 0) == 0
    lifecycle.apply_final(r, BUY, 1, [pay_b], 300)
    lifecycle.apply_final(r, BUY, 2, [pay_a], 300)
    assert {_doc(r, x)["state"] for x in (a, b)} == {"settled"}  # pulls' batches not final yet
    lifecycle.apply_final(r, SELL, 1, [_log(r, SELL)[ia]], 300)
    lifecycle.apply_final(r, SELL, 2, [_log(r, SELL)[ib]], 300)
    for x in (a, b):
        d = _doc(r, x)
        assert d["state"] == "finalized" and d["legs"][0]["state"] == "failed_final" and d["legs"][1]["state"] == "final"
        assert [h["state"] for h in d["history"]] == ["confirmed", "settled", "finalized"]
    assert r.scard(f"stl:{SELL}:confirms") == 0  # nothing pulled, nothing to close


# -- per-trader cap and loss budget ----------------------------------------------------

def _decide_all_at_once(redis_url: str, rules: TierRules, oids: list[str], threads: int = 8) -> None:
    """Decide `oids` from `threads` threads at once, each on its own connection and in its
    own shuffled order: decisions of one trader's orders race each other."""
    start = threading.Barrier(threads)
    errors: list[BaseException] = []

    def work(seed: int) -> None:
        rr = redis.Redis.from_url(redis_url, decode_responses=True)
        mine = oids[:]
        random.Random(seed).shuffle(mine)
        start.wait()
        try:
            for oid in mine:
                lifecycle.decide_tier(rr, oid, rules, ASSETS, int(time.time() * 1000))
        except BaseException as e:
            errors.append(e)

    ts = [threading.Thread(target=work, args=(k,)) for k in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(120)
    assert not errors, errors


def test_one_traders_orders_decided_at_once_never_exceed_its_cap(redis_url: str) -> None:
    r = redis.Redis.from_url(redis_url, decode_responses=True)
    # 30 USD each: a trader fits three (90 of 100), the chain 20 of them (600 of 610).
    rules = TierRules(RULES.prices, {SELL: FastTierLimits(usd6(100), usd6(610), trader_cap=usd6(100))}, RULES.decimals)
    greedy, others = "0x" + "22" * 20, ["0x" + f"{k:02x}" * 20 for k in range(0x30, 0x35)]
    g = [_confirm(r, k, 30_000_000, trader=greedy)[0] for k in range(1, 41)]
    o = [_confirm(r, 100 + 10 * j + k, 30_000_000, trader=t)[0] for j, t in enumerate(others) for k in range(3)]
    for _ in range(3):  # three rounds of fresh races
        _decide_all_at_once(redis_url, rules, g + o)
        docs = {x: _doc(r, x) for x in g + o}
        assert all(d["tier"] is not None for d in docs.values())
    fast_g = [x for x in g if docs[x]["tier"] == "fast"]
    assert len(fast_g) == 3 and int(r.hget(trader_exposure_key(SELL), greedy) or 0) == usd6(90)
    assert all("the trader's fast-tier exposure" in docs[x]["tierReason"] for x in g if x not in fast_g)
    # The other traders are unaffected: each got its three, within the chain's cap.
    assert all(docs[x]["tier"] == "fast" for x in o)
    assert {t: int(v) for t, v in r.hgetall(trader_exposure_key(SELL)).items()} == {greedy: usd6(90), **{t: usd6(90) for t in others}}
    assert int(r.get(exposure_key(SELL)) or 0) == usd6(30) * (3 + len(o)) <= usd6(610)
    payouts = [e["orderId"] for e in _log(r, BUY).values()]
    assert sorted(payouts) == sorted(fast_g + o)  # one payout per fast order, none for the rest
    # A fast pull settles: the trader has room for one more (30 of 100 free again).
    index = next(i for i, e in _log(r, SELL).items() if e["orderId"] == fast_g[0])
    _pull_outcome(r, fast_g[0], index, ok=True, batch=1, tx="0xa1")
    assert int(r.hget(trader_exposure_key(SELL), greedy) or 0) == usd6(60)
    more = [_confirm(r, k, 30_000_000, trader=greedy)[0] for k in (41, 42)]
    _decide_all_at_once(redis_url, rules, more)
    assert sorted(_doc(r, x)["tier"] for x in more) == ["fast", "standard"]
    # Every open fast payout of a trader settled or failed: its field is gone, not 0.
    other = others[0]
    for k, x in enumerate(x for x in o if _doc(r, x)["order"]["trader"] == other):
        index = next(i for i, e in _log(r, SELL).items() if e["orderId"] == x)
        _pull_outcome(r, x, index, ok=k != 1, batch=2 + k, tx=f"0xb{k}")
    assert not r.hexists(trader_exposure_key(SELL), other)


def test_an_order_the_rules_cannot_read_is_left_standard_alone(redis_url: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="crossbook.lifecycle")
    r = redis.Redis.from_url(redis_url, decode_responses=True)
    rules = TierRules({**RULES.prices, "DAI": usd6(1)}, RULES.limits, {**RULES.decimals, (BUY, "DAI"): 18})
    (a, _), (b, _), (c, _), (d, _) = (_confirm(r, k, 10_000_000) for k in (1, 2, 3, 4))
    doc = _doc(r, b)
    doc["buySymbol"] = "DAI"  # priced, but not in the settlement's asset index: no payout leg
    r.set(f"order:{b}", json.dumps(doc))
    doc = _doc(r, d)
    del doc["order"]["recipient"]  # not an order
    r.set(f"order:{d}", json.dumps(doc))
    assert lifecycle.enqueue_fast_payouts(r, SELL, rules, ASSETS) == 2
    assert [_doc(r, x).get("tier") for x in (a, b, c, d)] == ["fast", None, "fast", None]
    assert sorted(e["orderId"] for e in _log(r, BUY).values()) == sorted([a, c])
    assert int(r.get(exposure_key(SELL)) or 0) == usd6(20)
    failed = [m for m in caplog.messages if "fast-tier decision failed" in m]
    assert len(failed) == 2 and b in failed[1] and d in failed[0]


def test_a_scan_decides_in_log_order_while_the_api_appends_to_the_buy_chains_log(redis_url: str) -> None:
    """One tick decides its whole scan in one transaction, retried while the API's confirm
    script keeps appending pulls to the buy chain's log: the payouts still take gapless
    indices there, once each, and the caps hold over the whole scan, in log order."""
    r = redis.Redis.from_url(redis_url, decode_responses=True)
    # 10 USD each; each trader fits 10 (100), the chain 25 (250): the first 25 in the log go fast.
    rules = TierRules(RULES.prices, {SELL: FastTierLimits(usd6(100), usd6(250), trader_cap=usd6(100))}, RULES.decimals)
    traders = ["0x" + f"{k:02x}" * 20 for k in range(0x40, 0x43)]
    orders = [_confirm(r, k, 10_000_000, trader=traders[k % 3]) for k in range(1, 61)]
    stop, confirmed = threading.Event(), []

    def api() -> None:  # orders selling on the buy chain: each takes its next log index
        rr = redis.Redis.from_url(redis_url, decode_responses=True)
        k = 1000
        while not stop.is_set() or len(confirmed) < 50:
            confirmed.append(_confirm(rr, k, 1_000_000, buy=SELL, sell=BUY)[1])
            k += 1

    t = threading.Thread(target=api)
    t.start()
    try:
        while len(confirmed) < 10:
            time.sleep(0.001)
        assert lifecycle.enqueue_fast_payouts(r, SELL, rules, ASSETS) == 25
    finally:
        stop.set()
        t.join(60)
    docs = [_doc(r, oid) for oid, _ in sorted(orders, key=lambda o: o[1])]
    assert [d["tier"] for d in docs] == ["fast"] * 25 + ["standard"] * 35
    log_b = _log(r, BUY)
    assert sorted(log_b) == list(range(int(r.get(f"log:{BUY}:next") or 0)))  # gapless, one entry per index
    payouts = {e["orderId"]: i for i, e in log_b.items() if e["kind"] == "payout"}
    assert payouts == {d["id"]: d["legs"][1]["logIndex"] for d in docs[:25]}
    assert sorted(confirmed) == sorted(i for i, e in log_b.items() if e["kind"] == "pull")  # no pull overwritten
    assert int(r.get(exposure_key(SELL)) or 0) == usd6(250)
    assert sum(int(v) for v in r.hgetall(trader_exposure_key(SELL)).values()) == usd6(250)
    assert all(int(v) <= usd6(100) for v in r.hgetall(trader_exposure_key(SELL)).values())


BUDGET = TierRules(RULES.prices, {SELL: FastTierLimits(usd6(100), usd6(1000), loss_budget=usd6(100), loss_window=3600)}, RULES.decimals)


def _alerts(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [m for m in caplog.messages if m.startswith("ALERT") and "fast tier turned off" in m]


def test_loss_budget_turns_the_tier_off_once_until_the_operator_turns_it_on(redis_url: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="crossbook.lifecycle")
    r = redis.Redis.from_url(redis_url, decode_responses=True)
    (a, ia), (b, ib), (c, ic) = (_confirm(r, k, v) for k, v in ((1, 90_000_000), (2, 80_000_000), (3, 70_000_000)))
    assert lifecycle.enqueue_fast_payouts(r, SELL, BUDGET, ASSETS) == 3
    _pull_outcome(r, a, ia, ok=False, batch=1, tx="0xa1")  # 90 of 100: still on
    assert r.zcard(fast_losses_key(SELL)) == 1 and lifecycle.check_loss_budget(r, SELL, BUDGET.limits[SELL]).on
    _pull_outcome(r, b, ib, ok=False, batch=2, tx="0xa2")  # 170 > 100
    # The next decision turns it off in its own transaction (no tick check ran before it).
    d, _ = _confirm(r, 4, 10_000_000)
    lifecycle.decide_tier(r, d, BUDGET, ASSETS, int(time.time() * 1000))
    doc = _doc(r, d)
    assert doc["tier"] == "standard" and f"chain {SELL}'s fast tier is off: fast-tier losses of 170000000 usd6" in doc["tierReason"]
    sw = Switch.from_hash(r.hgetall(switch_key(SELL)))
    assert not sw.on and sw.by == "loss budget" and "exceed the loss budget of 100000000 usd6" in sw.reason
    # Ticks from several workers at once: it stays off, and the ALERT was logged once.
    ts = [threading.Thread(target=lambda: lifecycle.check_loss_budget(redis.Redis.from_url(redis_url), SELL, BUDGET.limits[SELL])) for _ in range(6)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(60)
    e, _ = _confirm(r, 5, 10_000_000)
    assert lifecycle.enqueue_fast_payouts(r, SELL, BUDGET, ASSETS) == 0 and _doc(r, e)["tier"] == "standard"
    assert len(_alerts(caplog)) == 1
    rep = fast_tier_report(r, SELL, BUDGET.limits[SELL])
    assert rep["on"] is False and rep["switch"]["by"] == "loss budget" and rep["losses"]["inWindowUsd6"] == str(usd6(170))
    assert rep["exposureUsd6"] == str(usd6(70)) and rep["largestTraders"] == [{"trader": TRADER, "usd6": str(usd6(70))}]
    # The operator turns it on: the losses so far were seen, the budget starts afresh.
    set_fast_tier(r, SELL, True, "allowance revokes were one trader's; accounts blocked")
    rep = fast_tier_report(r, SELL, BUDGET.limits[SELL])
    assert rep["on"] is True and rep["losses"]["countedUsd6"] == "0" and rep["losses"]["inWindowUsd6"] == str(usd6(170))
    f, _ = _confirm(r, 6, 20_000_000)
    assert lifecycle.enqueue_fast_payouts(r, SELL, BUDGET, ASSETS) == 1 and _doc(r, f)["tier"] == "fast"
    time.sleep(0.01)
    _pull_outcome(r, c, ic, ok=False, batch=3, tx="0xa3")  # 70 counted: on
    assert lifecycle.check_loss_budget(r, SELL, BUDGET.limits[SELL]).on
    # By hand: off for new orders, whatever the budget.
    set_fast_tier(r, SELL, False)
    g, _ = _confirm(r, 7, 10_000_000)
    assert lifecycle.enqueue_fast_payouts(r, SELL, BUDGET, ASSETS) == 0
    assert _doc(r, g)["tierReason"] == f"chain {SELL}'s fast tier is off: turned off by the operator"
    assert len(_alerts(caplog)) == 1  # the operator's switch is no alert


def test_losses_older_than_the_window_do_not_count(redis_url: str) -> None:
    r = redis.Redis.from_url(redis_url, decode_responses=True)
    (a, ia), (b, ib) = _confirm(r, 1, 90_000_000), _confirm(r, 2, 80_000_000)
    assert lifecycle.enqueue_fast_payouts(r, SELL, BUDGET, ASSETS) == 2
    _pull_outcome(r, a, ia, ok=False, batch=1, tx="0xa1")
    _pull_outcome(r, b, ib, ok=False, batch=2, tx="0xa2")
    later = int(time.time() * 1000) + 3600 * 1000 + 1000  # both losses an hour and a second old
    assert lifecycle.check_loss_budget(r, SELL, BUDGET.limits[SELL], now_ms=later).on
    assert r.zcard(fast_losses_key(SELL)) == 0  # dropped from the budget's set; `stl:losses` keeps the record
    assert r.llen("stl:losses") == 2
    # Fresh losses, 120 USD within the window: over the budget.
    (x, ix), (y, iy) = _confirm(r, 11, 60_000_000), _confirm(r, 12, 60_000_000)
    assert lifecycle.enqueue_fast_payouts(r, SELL, BUDGET, ASSETS) == 2
    _pull_outcome(r, x, ix, ok=False, batch=3, tx="0xa3")
    _pull_outcome(r, y, iy, ok=False, batch=4, tx="0xa4")
    assert not lifecycle.check_loss_budget(r, SELL, BUDGET.limits[SELL]).on
