"""Order lifecycle: what a mined or final batch means for its orders, legs and holds.

    confirmed ──pull settled──▶ pull_settled ──payout settled──▶ settled ──both final──▶ finalized
        │
        └──pull failed on chain (PullFailed)──▶ failed   (nothing taken; payout never enqueued)

`refunded` (the trader reclaimed a pulled order from the vault) is terminal too. Terminal
states never change (`transition` refuses). The pure part is `transition`; the rest
applies a batch's on-chain outcome to the Redis documents, one order at a time, each in a
WATCH/MULTI transaction so a crash between two orders leaves every order either fully
updated or untouched, and a replay (a redelivered task, a reorged batch mined again)
finds its work done and only refreshes the block fields.

Per order, on its pull's batch mined: release the trader's `held:*`, add the amount to the
vault's expected balance, append the PAYOUT leg to the buy chain's log (same keys and
format as the ledger's pull legs; the WATCH on `log:{chain}:next` keeps indices gapless
against the API's confirm script). On its payout mined: release `invheld:*`, subtract
from the expected balance. On a failed pull: release both holds, fail the order with the
reason. When both legs are final: `finalized`, and the pull's ref is queued so the sell
chain's vault closes it (`confirms` of the next settle there).

Fast tier (settlement/tier.py): `enqueue_fast_payouts`, called by the sell chain's tick,
decides each new order's tier and appends a fast order's payout at once, so the payout
may be mined first: `confirmed ──payout settled──▶ settled ──pull settled, both final──▶
finalized` (or the standard sequence when the pull wins the race). A fast order whose
pull fails has been (or will be) paid anyway: nothing was taken from the trader, the
payout is booked as the operator's loss (`stl:{buy}:losses`, `stl:losses`, ALERT), and
the order ends `finalized` once both legs are final, its pull leg `failed_final` and the
loss in `operatorLoss`. Never `failed`: that state promises that nothing was paid.
A decision reads and writes the chain's exposure, the trader's share of it and the
tier's switch in one transaction; a loss also goes to the sell chain's budget
(`stl:{sell}:fastlosses`), and the transaction that finds the budget exceeded turns the
chain's tier off (`stl:{sell}:fasttier`, one ALERT).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass
from typing import Any, TypeVar

from redis.exceptions import WatchError

from app.domain.order import TERMINAL_STATES, Order, OrderState, payout_leg
from settlement import rebalance
from settlement.batching import Keys
from settlement.tier import (
    FastTierLimits,
    Switch,
    Tier,
    TierRules,
    exposure_key,
    fast_losses_key,
    loss_entry,
    losses_key,
    switch_key,
    trader_exposure_key,
    window_losses,
)
from settlement.vault import (
    NO_REF,
    MakerLeg,
    Paid,
    PayoutSkipped,
    PoolTrade,
    Pulled,
    PullFailed,
    VaultEvent,
)
from settlement.zk.legs import leaf
from settlement.zk.poseidon import poseidon

__all__ = [
    "ALLOWED",
    "IllegalTransition",
    "LegOutcome",
    "MinedInfo",
    "apply_final",
    "apply_mined",
    "apply_reclaimed",
    "check_loss_budget",
    "decide_tier",
    "decide_tiers",
    "enqueue_fast_payouts",
    "outcomes",
    "transition",
]

log = logging.getLogger("crossbook.lifecycle")

T = TypeVar("T")

S = OrderState
ALLOWED: dict[OrderState, frozenset[OrderState]] = {
    # confirmed → settled: a fast-tier payout mined before its pull.
    S.CONFIRMED: frozenset({S.PULL_SETTLED, S.SETTLED, S.FAILED, S.REFUNDED}),
    S.PULL_SETTLED: frozenset({S.SETTLED, S.REFUNDED}),
    S.SETTLED: frozenset({S.FINALIZED}),
    S.FINALIZED: frozenset(),
    S.FAILED: frozenset(),
    S.REFUNDED: frozenset(),
}


class IllegalTransition(ValueError):
    """A state change the lifecycle does not allow (e.g. out of a terminal state)."""


def transition(current: OrderState | str, target: OrderState | str) -> bool:
    """True if `current → target` is a step to take, False if already there. Pure."""
    cur, tgt = OrderState(current), OrderState(target)
    if cur == tgt:
        return False
    if tgt not in ALLOWED[cur]:
        kind = "terminal" if cur in TERMINAL_STATES else "current"
        raise IllegalTransition(f"{kind} state {cur.value} cannot become {tgt.value}")
    return True


@dataclass(frozen=True, slots=True)
class MinedInfo:
    chain_id: int
    batch: int
    tx_hash: str
    block: int
    block_hash: str


@dataclass(frozen=True, slots=True)
class LegOutcome:
    """What the vault did with one leg of a batch."""

    index: int  # position in the chain's log
    leg: dict[str, Any]  # the log entry
    ok: bool
    reason: str = ""
    pull_ref: int | None = None
    amount_out: int = 0  # a POOL leg's output (PoolTrade), 0 when it failed


_FAIL_TEXT = {
    1: "BAD_SIGNATURE: the order's signature did not recover to the trader on chain",
    2: "EXPIRED: the order's deadline passed before its pull was settled",
    3: "NONCE_USED: the order's nonce was already used on chain",
    4: "TRANSFER_FAILED: transferFrom failed (allowance or balance too low at settlement)",
}


def outcomes(start: int, legs: Sequence[dict[str, Any]], events: Sequence[VaultEvent]) -> list[LegOutcome]:
    """Match the settle transaction's events to the batch's legs. Pure.

    Pulls are matched by order hash (Pulled has no leg index) or by leg index (PullFailed);
    payouts by leg index. A leg without an event is an error: the vault emits one per leg.
    """
    pulled = {e.order_hash.hex(): e for e in events if isinstance(e, Pulled)}
    failed = {e.leg_index: e for e in events if isinstance(e, PullFailed)}
    paid = {e.leg_index for e in events if isinstance(e, Paid)}
    skipped = {e.leg_index for e in events if isinstance(e, PayoutSkipped)}
    maker = {e.leg_index: e.ok for e in events if isinstance(e, MakerLeg)}
    pool = {e.leg_index: e.amount_out for e in events if isinstance(e, PoolTrade)}
    out = []
    for k, leg in enumerate(legs):
        i = start + k
        if leg["kind"] == "pull":
            if i in failed:
                reason = _FAIL_TEXT.get(int(failed[i].reason), f"reason {int(failed[i].reason)}")
                out.append(LegOutcome(i, leg, False, reason))
                continue
            ev = pulled.get(leg["orderId"].lower().removeprefix("0x"))
            if ev is None:
                raise ValueError(f"leg {i}: no Pulled/PullFailed event for order {leg['orderId']}")
            out.append(LegOutcome(i, leg, True, pull_ref=None if ev.pull_ref == NO_REF else ev.pull_ref))
        elif leg["kind"] in ("maker_in", "maker_out"):
            # Not the order's own movement: applied by settlement/rebalance.py.
            if i not in maker:
                raise ValueError(f"leg {i}: no MakerLeg event")
            out.append(LegOutcome(i, leg, maker[i], "" if maker[i] else f"{leg['kind']} leg failed on chain"))
        elif leg["kind"] == "pool":
            if i not in pool:
                raise ValueError(f"leg {i}: no PoolTrade event")
            ok = pool[i] > 0
            out.append(LegOutcome(i, leg, ok, "" if ok else "pool trade failed on chain", amount_out=pool[i]))
        elif i in paid:
            out.append(LegOutcome(i, leg, True))
        elif i in skipped:
            out.append(LegOutcome(i, leg, False, "payout skipped: its pull failed"))
        else:
            raise ValueError(f"leg {i}: no Paid/PayoutSkipped event")
    return out


# -- Redis application -----------------------------------------------------------------


def _big(v: Any) -> int:
    return int(v.decode() if isinstance(v, bytes) else v) if v is not None else 0


def _transact(r: Any, watch: Sequence[str], queue: Callable[[Any], tuple[T, bool]]) -> T:
    """Run `queue(pipe)` in a WATCH/MULTI transaction on `watch`, retried whole on a
    concurrent write. `queue` reads through the client (`_Reader(r)`; the keys it reads
    are watched), queues its writes on `pipe` and returns (its result, whether to commit
    them)."""
    with r.pipeline() as p:
        while True:
            try:
                p.watch(*watch)
                p.multi()
                result, commit = queue(p)
                if commit:
                    p.execute()
                else:
                    p.reset()
                return result
            except WatchError:
                continue


def _update(r: Any, order_id: str, step: Callable[[dict[str, Any], Any, Any], list[tuple[str, Any]] | None], watch: Sequence[str] = ()) -> dict[str, Any] | None:
    """Run `step(doc, reader, pipe)` on the order in a WATCH/MULTI transaction; retried
    on a concurrent write. `step` reads through `reader`, queues writes on `pipe` and
    returns None for "nothing to do". Returns the new doc."""
    key = Keys.order(order_id)

    def queue(p: Any) -> tuple[dict[str, Any] | None, bool]:
        raw = r.get(key)
        if raw is None:
            log.error("order %s missing from the ledger", order_id)
            return None, False
        doc = json.loads(raw)
        if step(doc, _Reader(r), p) is None:
            return doc, False
        p.set(key, json.dumps(doc, separators=(",", ":")))
        p.publish(f"orders:{doc['order']['trader'].lower()}", json.dumps({"orderId": order_id, "state": doc["state"]}))
        return doc, True

    return _transact(r, [key, *watch], queue)


class _Reader:
    """Reads inside a watched transaction: plain reads on the client are fine because any
    change to a watched key aborts the MULTI; keys read here are also watched."""

    def __init__(self, r: Any) -> None:
        self.r = r

    def get(self, key: str) -> Any:
        return self.r.get(key)

    def hget(self, key: str, field: str) -> Any:
        return self.r.hget(key, field)

    def hgetall(self, key: str) -> Any:
        return self.r.hgetall(key)

    def zrangebyscore(self, key: str, low: str, high: str) -> Any:
        return self.r.zrangebyscore(key, low, high)


def _set_state(doc: dict[str, Any], state: OrderState, *, reason: str = "", now_ms: int) -> bool:
    if not transition(doc["state"], state):
        return False
    doc["state"] = state.value
    if reason:
        doc["reason"] = reason
    doc["history"].append({"state": state.value, "at": now_ms, **({"reason": reason} if reason else {})})
    return True


def _leg(doc: dict[str, Any], kind: str) -> dict[str, Any]:
    return next(x for x in doc["legs"] if x["kind"] == kind)


def _order_of(doc: dict[str, Any]) -> Order:
    o = doc["order"]
    return Order(
        trader=o["trader"], sell_chain_id=int(o["sellChainId"]), sell_token=o["sellToken"],
        sell_amount=int(o["sellAmount"]), buy_chain_id=int(o["buyChainId"]), buy_token=o["buyToken"],
        min_buy_amount=int(o["minBuyAmount"]), recipient=o["recipient"], nonce=int(o["nonce"]),
        deadline=int(o["deadline"]), quote_id=o["quoteId"],
    )


def _held_key(doc: dict[str, Any]) -> str:
    o = doc["order"]
    return f"held:{o['sellChainId']}:{o['sellToken'].lower()}:{o['trader'].lower()}"


def _invheld_key(doc: dict[str, Any]) -> str:
    o = doc["order"]
    return f"invheld:{o['buyChainId']}:{o['buyToken'].lower()}"


def _release(reader: _Reader, pipe: Any, key: str, amount: int) -> None:
    left = _big(reader.get(key)) - amount
    if left < 0:  # never below zero: a hold released twice would free someone else's funds
        log.error("%s would go below zero (%d); clamped", key, left)
        left = 0
    pipe.set(key, str(left))


def _expect(reader: _Reader, pipe: Any, chain: int, token: int, delta: int) -> None:
    key = Keys.expect(chain)
    cur = _big(reader.hget(key, str(token)))
    pipe.hset(key, str(token), str(cur + delta))


def _mark(leg: dict[str, Any], info: MinedInfo, state: str) -> None:
    leg.update(state=state, batch=info.batch, txHash=info.tx_hash, block=info.block, blockHash=info.block_hash)


def apply_mined(r: Any, info: MinedInfo, outs: Sequence[LegOutcome], asset_index: dict[str, int]) -> None:
    """Apply a mined batch's leg outcomes to the orders (idempotent)."""
    now_ms = int(time.time() * 1000)
    for o in outs:
        oid = o.leg.get("orderId", "")
        if o.leg["kind"] not in ("pull", "payout"):
            continue  # maker and pool legs: rebalance.apply_aux_mined below
        if o.leg["kind"] == "pull":
            if o.ok:
                _pull_settled(r, oid, o, info, asset_index, now_ms)
            else:
                _pull_failed(r, oid, o, info, asset_index, now_ms)
        elif o.ok:
            _payout_settled(r, oid, o, info, now_ms)
        else:
            log.error("order %s: payout leg %d skipped on chain %d", oid, o.index, info.chain_id)
    rebalance.apply_aux_mined(r, info, outs)


def _pull_settled(r: Any, oid: str, o: LegOutcome, info: MinedInfo, asset_index: dict[str, int], now_ms: int) -> None:
    raw = r.get(Keys.order(oid))
    if raw is None:
        log.error("order %s missing", oid)
        return
    first = json.loads(raw)
    buy_chain = int(first["order"]["buyChainId"])
    watch = [_held_key(first), Keys.expect(info.chain_id), Keys.log_next(buy_chain), exposure_key(info.chain_id),
             trader_exposure_key(info.chain_id)]

    def step(doc: dict[str, Any], rd: _Reader, p: Any) -> list[tuple[str, Any]] | None:
        pull = _leg(doc, "pull")
        if pull.get("txHash") == info.tx_hash:
            if pull.get("blockHash") == info.block_hash:
                return None
            _mark(pull, info, pull["state"])  # the same tx, mined again after a reorg
            return []
        if not _pull_open(doc):
            return None
        _mark(pull, info, "settled")
        if o.pull_ref is not None:
            pull["pullRef"] = str(o.pull_ref)
        if doc["state"] == S.CONFIRMED.value:  # a fast payout mined first left it `settled`
            _set_state(doc, S.PULL_SETTLED, now_ms=now_ms)
        _release(rd, p, _held_key(doc), int(o.leg["amount"]))
        _expect(rd, p, info.chain_id, int(o.leg["token"]), int(o.leg["amount"]))
        if _payout_in_log(doc):
            _release_exposure(rd, p, doc)  # fast tier: the payout went in at confirmation
        else:
            # The payout now has funds behind it: it enters the buy chain's log.
            doc.setdefault("tier", Tier.STANDARD.value)
            _append_payout(rd, p, doc, oid, asset_index, now_ms)
        # The order's maker fills (MAKER_IN) and pool trades (flows) follow its pull.
        rebalance.on_pull_settled(doc, rd, p, asset_index, now_ms)
        return []

    _update(r, oid, step, [*watch, *rebalance.watch_keys(first)])


def _payout_in_log(doc: dict[str, Any]) -> bool:
    return _leg(doc, "payout").get("logIndex") is not None


def _pull_open(doc: dict[str, Any]) -> bool:
    """The pull's outcome is still to apply: a confirmed order, or a fast one whose payout
    was mined first (`settled`, pull still pending)."""
    if doc["state"] == S.CONFIRMED.value:
        return True
    return doc["state"] == S.SETTLED.value and _payout_in_log(doc) and _leg(doc, "pull").get("state") == "pending"


def _payout_entry(doc: dict[str, Any], oid: str, asset_index: dict[str, int], now_ms: int) -> dict[str, Any]:
    """The order's PAYOUT leg as a log entry, all but its index (its leaf hash is the
    costly part: a Poseidon hash)."""
    order = _order_of(doc)
    leg = payout_leg(order, asset_index[doc["buySymbol"]], bytes.fromhex(oid[2:]), int(doc["buyAmount"]))
    return {
        "index": None, "kind": "payout", "orderId": oid, "account": order.recipient,
        "token": leg.token, "amount": str(leg.amount), "minAmount": str(leg.min_amount),
        "orderRef": str(leg.order_ref), "leafHash": str(poseidon(list(leaf(leg)))), "at": now_ms,
    }


def _put_payout(doc: dict[str, Any], entry: dict[str, Any], index: int | str) -> str:
    """Give the payout `entry` its log `index` (or `PAYOUT_INDEX`, for `APPEND_PAYOUTS_LUA`
    to fill in), in the entry and in the order's payout leg; returns the entry as stored."""
    _leg(doc, "payout").update(logIndex=index, state="pending", leafHash=entry["leafHash"])
    return json.dumps({**entry, "index": index}, separators=(",", ":"))


PAYOUT_INDEX = "__PAYOUT_INDEX__"
# Appends payouts to a buy chain's log at its next indices in one atomic step, so a
# decision need not watch `log:{buy}:next`, which the API's confirm script moves with
# every order selling on that chain (a transaction watching it kept losing to a busy API).
APPEND_PAYOUTS_LUA = r"""
-- KEYS: 1 the buy chain's log next, 2 its log legs, 3.. the orders
-- ARGV: per order, its log entry then its document, each with "__PAYOUT_INDEX__" for the index
local index = tonumber(redis.call('GET', KEYS[1]) or '0')
for k = 3, #KEYS do
  local at = tostring(index)
  redis.call('HSET', KEYS[2], at, (string.gsub(ARGV[2 * k - 5], '"__PAYOUT_INDEX__"', at)))
  redis.call('SET', KEYS[k], (string.gsub(ARGV[2 * k - 4], '"__PAYOUT_INDEX__"', at)))
  index = index + 1
end
redis.call('SET', KEYS[1], tostring(index))
"""


def _append_payout(rd: _Reader, p: Any, doc: dict[str, Any], oid: str, asset_index: dict[str, int], now_ms: int) -> int:
    """Queue the order's PAYOUT leg at the buy chain's next log index (the caller watches
    `log:{buy}:next`, so indices stay gapless against the API's confirm script)."""
    buy_chain = int(doc["order"]["buyChainId"])
    index = int(rd.get(Keys.log_next(buy_chain)) or 0)
    p.hset(Keys.log_legs(buy_chain), str(index), _put_payout(doc, _payout_entry(doc, oid, asset_index, now_ms), index))
    p.set(Keys.log_next(buy_chain), str(index + 1))
    return index


def _release_exposure(rd: _Reader, p: Any, doc: dict[str, Any]) -> None:
    """The fast payout's pull has an outcome: it no longer counts against the caps."""
    if not doc.get("exposureOpen"):
        return
    sell, value = int(doc["order"]["sellChainId"]), int(doc["tierValueUsd6"])
    _release(rd, p, exposure_key(sell), value)
    trader = doc.get("fastTrader")  # absent in orders decided before the per-trader cap
    if trader is not None:
        key = trader_exposure_key(sell)
        left = _big(rd.hget(key, trader)) - value
        if left < 0:
            log.error("%s %s would go below zero (%d); clamped", key, trader, left)
        if left > 0:
            p.hset(key, trader, str(left))
        else:
            p.hdel(key, trader)  # the hash holds traders with open fast payouts only
    doc["exposureOpen"] = False


def _switch_off(rd: _Reader, p: Any, chain: int, limits: FastTierLimits, now_ms: int, flip: dict[str, str]) -> str | None:
    """Why the chain's fast tier is off, or None when on. Inside a transaction watching
    `switch_key` and `fast_losses_key`: when the losses counted toward the budget exceed
    it, the tier turns off here (queued on `p`, `flip` says why) so no decision committed
    after the loss that crossed it can go fast."""
    sw = Switch.from_hash(rd.hgetall(switch_key(chain)))
    if not sw.on:
        return sw.reason or f"turned off by {sw.by or 'the operator'}"
    losses = window_losses(rd.zrangebyscore(fast_losses_key(chain), f"({limits.counted_since(sw, now_ms)}", "+inf"))
    if not limits.over_budget(losses):
        return None
    reason = (f"fast-tier losses of {losses} usd6 on pulls on chain {chain} within {limits.loss_window}s "
              f"exceed the loss budget of {limits.loss_budget} usd6")
    p.hset(switch_key(chain), mapping=Switch(False, "loss budget", reason, now_ms, sw.count_from).to_hash())
    flip["reason"] = reason
    return reason


def _alert_switched_off(chain: int, flip: dict[str, str]) -> None:
    if flip:
        log.error("ALERT chain %d: fast tier turned off: %s; new orders settle standard until "
                  "`crossbook settlement fast-tier --chain %d --enable`", chain, flip["reason"], chain)


def check_loss_budget(r: Any, chain_id: int, limits: FastTierLimits, now_ms: int | None = None) -> Switch:
    """Turn the chain's fast tier off if its losses in the window exceed the budget (each
    tick, so it turns off without waiting for a new order; the ALERT is logged by the one
    transaction that turns it off). Losses older than the window are dropped. Returns the
    switch as it is now."""
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    r.zremrangebyscore(fast_losses_key(chain_id), "-inf", now_ms - limits.loss_window * 1000)  # no write when none
    flip: dict[str, str] = {}

    def queue(p: Any) -> tuple[None, bool]:
        flip.clear()  # a retried transaction looks afresh
        _switch_off(_Reader(r), p, chain_id, limits, now_ms, flip)
        return None, bool(flip)

    _transact(r, [switch_key(chain_id), fast_losses_key(chain_id)], queue)
    _alert_switched_off(chain_id, flip)
    return Switch.from_hash(r.hgetall(switch_key(chain_id)))


# Orders looked at per tick at most (the rest on the next tick; a pull settled before its
# tier was decided takes the standard path, which is always correct).
FAST_SCAN_LIMIT = 512


def enqueue_fast_payouts(r: Any, chain_id: int, rules: TierRules, asset_index: dict[str, int]) -> int:
    """Decide the tier of every order whose pull entered `chain_id`'s log since the last
    call (the sell chain's tick calls this), and append the fast ones' payouts to their
    buy chains' logs at once. Idempotent: an order's `tier` is written once, in the same
    transaction as its payout and the exposure. Returns how many went fast."""
    if chain_id not in rules.limits:
        return 0  # no fast tier for pulls here: every order is standard (set when its pull settles)
    check_loss_budget(r, chain_id, rules.limits[chain_id])
    scan = f"stl:{chain_id}:tierscan"
    applied = int(r.get(Keys.applied(chain_id)) or 0)  # legs below are mined: too late
    start = max(int(r.get(scan) or 0), applied)
    end = min(int(r.get(Keys.log_next(chain_id)) or 0), start + FAST_SCAN_LIMIT)
    if end <= start:
        return 0
    pulls: list[str] = []
    for i, raw in zip(range(start, end), r.hmget(Keys.log_legs(chain_id), [str(i) for i in range(start, end)]), strict=True):
        if raw is None:  # cannot happen (the confirm script writes index and leg together)
            end = i
            break
        leg = json.loads(raw)
        if leg["kind"] == "pull":
            pulls.append(leg["orderId"])
    tiers = decide_tiers(r, pulls, rules, asset_index, int(time.time() * 1000))
    r.eval("if tonumber(redis.call('GET', KEYS[1]) or '0') < tonumber(ARGV[1]) then redis.call('SET', KEYS[1], ARGV[1]) end", 1, scan, str(end))
    return sum(t is Tier.FAST for t in tiers.values())


def decide_tier(r: Any, oid: str, rules: TierRules, asset_index: dict[str, int], now_ms: int) -> Tier | None:
    """Decide one order's tier (`decide_tiers`); None when it was decided already."""
    return decide_tiers(r, [oid], rules, asset_index, now_ms).get(oid)


def _undecided(doc: dict[str, Any]) -> bool:
    """The order's tier is still to decide: confirmed, its pull pending, no payout yet
    (a pull whose outcome came first took the standard path)."""
    return (doc.get("tier") is None and doc["state"] == S.CONFIRMED.value and not _payout_in_log(doc)
            and _leg(doc, "pull").get("state") == "pending")


def decide_tiers(r: Any, oids: Sequence[str], rules: TierRules, asset_index: dict[str, int], now_ms: int) -> dict[str, Tier]:
    """Decide the tiers of orders with pulls on chains with a fast tier, appending the
    fast ones' payouts: one transaction per sell chain, deciding its orders in the order
    given. Safe to run concurrently for any orders. Returns the tiers decided here (an
    order decided already, or missing, is left out). An order the rules cannot read is
    logged and left undecided: it settles standard."""
    raws = r.mget([Keys.order(oid) for oid in oids]) if oids else []
    by_sell: dict[int, list[tuple[str, dict[str, Any]]]] = {}
    for oid, raw in zip(oids, raws, strict=True):
        if raw is None:
            continue
        try:
            doc = json.loads(raw)
            sell = _order_of(doc).sell_chain_id  # an order the rules cannot read fails here
            if sell in rules.limits and _undecided(doc):
                by_sell.setdefault(sell, []).append((oid, doc))
        except (KeyError, ValueError, TypeError):
            log.exception("order %s: fast-tier decision failed; it settles standard", oid)
    decided: dict[str, Tier] = {}
    for sell, orders in by_sell.items():
        decided.update(_decide_on(r, sell, orders, rules, asset_index, now_ms))
    return decided


def _decide_on(
    r: Any, sell: int, orders: Sequence[tuple[str, dict[str, Any]]], rules: TierRules, asset_index: dict[str, int], now_ms: int,
) -> dict[str, Tier]:
    """`decide_tiers` for the orders of one sell chain, in one WATCH/MULTI transaction
    (retried whole on a concurrent write): the switch, the chain's exposure and each
    trader's share of it are read once and carried from order to order, so two orders of
    one trader cannot both take the last room under its cap, and the payouts take
    consecutive indices in their buy chains' logs (`APPEND_PAYOUTS_LUA`)."""
    entries: dict[str, dict[str, Any]] = {}

    def payout(oid: str, doc: dict[str, Any]) -> dict[str, Any]:
        if oid not in entries:
            entries[oid] = _payout_entry(doc, oid, asset_index, now_ms)
        return entries[oid]

    # The payouts of the orders that would go fast by size alone are built (a Poseidon
    # hash each) before the transaction, to keep its window short.
    for oid, doc in orders:
        with suppress(KeyError, ValueError, TypeError):  # logged in the transaction
            if rules.decide_order(doc, 0).tier is Tier.FAST:
                payout(oid, doc)
    keys = [Keys.order(oid) for oid, _ in orders]
    traders = sorted({doc["order"]["trader"].lower() for _, doc in orders})
    watch = [*keys, exposure_key(sell), trader_exposure_key(sell), switch_key(sell), fast_losses_key(sell)]
    flip: dict[str, str] = {}

    def queue(p: Any) -> tuple[dict[str, Tier], bool]:
        with r.pipeline(transaction=False) as rp:  # the reads in one round trip
            docs, exposure, mine = rp.mget(keys).get(exposure_key(sell)).hmget(trader_exposure_key(sell), traders).execute()
        room = _Room(_big(exposure), {t: _big(v) for t, v in zip(traders, mine, strict=True)})
        flip.clear()  # a retried transaction decides afresh
        decided = _decide_each(_Reader(r), p, sell, list(zip([oid for oid, _ in orders], docs, strict=True)),
                               rules, payout, room, now_ms, flip)
        return decided, bool(decided or flip)

    decided = _transact(r, watch, queue)
    _alert_switched_off(sell, flip)
    return decided


@dataclass(slots=True)
class _Room:
    """What `_decide_each` carries from order to order: the chain's fast-tier exposure
    and each trader's share of it."""

    exposure: int
    mine: dict[str, int]


def _decide_each(
    rd: _Reader, p: Any, sell: int, orders: Sequence[tuple[str, Any]], rules: TierRules,
    payout: Callable[[str, dict[str, Any]], dict[str, Any]], room: _Room, now_ms: int, flip: dict[str, str],
) -> dict[str, Tier]:
    """The decisions of `_decide_on`'s transaction, queued on `p`; `orders`: (id, the
    order's document as read in the transaction)."""
    limits = rules.limits[sell]
    off: list[str | None] = []  # the switch, read (and maybe turned off) once, when needed
    decided: dict[str, Tier] = {}
    payouts: dict[int, list[tuple[str, str, str]]] = {}  # buy chain -> (order, log entry, document)
    touched: set[str] = set()
    for oid, raw in orders:
        try:
            doc = json.loads(raw) if raw is not None else None
            if doc is None or not _undecided(doc):
                continue  # decided meanwhile, or the pull's outcome came first (standard)
            buy = int(doc["order"]["buyChainId"])
            trader = doc["order"]["trader"].lower()
            if sell != buy and not off:
                off.append(_switch_off(rd, p, sell, limits, now_ms, flip))
            d = rules.decide_order(doc, room.exposure, trader_exposure=room.mine[trader], off=off[0] if off else None)
            entry = payout(oid, doc) if d.tier is Tier.FAST else None
        except (KeyError, ValueError, TypeError):
            # Never block the tick: an order the rules cannot read settles standard.
            log.exception("order %s: fast-tier decision failed; it settles standard", oid)
            continue
        doc.update(tier=d.tier.value, tierReason=d.reason)
        if entry is not None:
            doc.update(tierValueUsd6=str(d.value), exposureOpen=True, fastTrader=trader)
            room.exposure += d.value
            room.mine[trader] += d.value
            touched.add(trader)
            put = _put_payout(doc, entry, PAYOUT_INDEX)
            payouts.setdefault(buy, []).append((Keys.order(oid), put, json.dumps(doc, separators=(",", ":"))))
        else:
            p.set(Keys.order(oid), json.dumps(doc, separators=(",", ":")))
        p.publish(f"orders:{trader}", json.dumps({"orderId": oid, "state": doc["state"]}))
        decided[oid] = d.tier
    if touched:
        p.set(exposure_key(sell), str(room.exposure))
        p.hset(trader_exposure_key(sell), mapping={t: str(room.mine[t]) for t in touched})
    for buy, at in payouts.items():
        keys = [Keys.log_next(buy), Keys.log_legs(buy), *(key for key, _, _ in at)]
        p.eval(APPEND_PAYOUTS_LUA, len(keys), *keys, *(x for _, leg_json, doc_json in at for x in (leg_json, doc_json)))
    return decided


def _pull_failed(r: Any, oid: str, o: LegOutcome, info: MinedInfo, asset_index: dict[str, int], now_ms: int) -> None:
    raw = r.get(Keys.order(oid))
    if raw is None:
        return
    first = json.loads(raw)
    buy = int(first["order"]["buyChainId"])
    lost: list[dict[str, Any]] = []

    def step(doc: dict[str, Any], rd: _Reader, p: Any) -> list[tuple[str, Any]] | None:
        pull = _leg(doc, "pull")
        if pull.get("txHash") == info.tx_hash:
            if pull.get("blockHash") == info.block_hash:
                return None
            _mark(pull, info, pull["state"])
            return []
        if not _pull_open(doc):
            return None
        _mark(pull, info, "failed")
        pull["reason"] = o.reason
        rebalance.on_pull_failed(doc, p, info)  # makers' fills are off: their funds are free
        _release(rd, p, _held_key(doc), int(doc["order"]["sellAmount"]))
        if not _payout_in_log(doc):
            doc.setdefault("tier", Tier.STANDARD.value)
            _leg(doc, "payout").update(state="cancelled")
            _set_state(doc, S.FAILED, reason=f"pull failed on chain {info.chain_id}: {o.reason}; nothing was taken", now_ms=now_ms)
            _release(rd, p, _invheld_key(doc), int(doc["buyAmount"]))
            return []
        # Fast tier: the payout is in the buy chain's committed log (or paid already) and
        # will be paid; its inventory hold goes when it settles, as any payout's.
        _release_exposure(rd, p, doc)
        # What the sell chain's loss budget counts (usd6 at the reference prices).
        p.zadd(fast_losses_key(info.chain_id), {loss_entry(oid, int(doc.get("tierValueUsd6", 0))): now_ms})
        token, amount = asset_index[doc["buySymbol"]], int(doc["buyAmount"])
        loss = {"orderId": oid, "chainId": buy, "token": token, "symbol": doc["buySymbol"], "amount": str(amount),
                "valueUsd6": doc.get("tierValueUsd6", "0"), "sellChainId": info.chain_id, "pullTx": info.tx_hash,
                "reason": o.reason, "at": now_ms}
        p.hset(losses_key(buy), str(token), str(_big(rd.hget(losses_key(buy), str(token))) + amount))
        p.rpush("stl:losses", json.dumps(loss, separators=(",", ":")))
        doc["operatorLoss"] = loss
        doc["reason"] = (
            f"pull failed on chain {info.chain_id}: {o.reason}; nothing was taken. The fast-tier payout of {amount} "
            f"{doc['buySymbol']} base units on chain {buy} is paid anyway, as the operator's loss"
        )
        lost.append(loss)
        return []

    _update(r, oid, step, [_held_key(first), _invheld_key(first), exposure_key(info.chain_id),
                           trader_exposure_key(info.chain_id), losses_key(buy)])
    for loss in lost[-1:]:
        log.error("ALERT order %s: pull failed on chain %d (%s) after its fast-tier payout was enqueued: operator loss %s %s on chain %d",
                  oid, info.chain_id, o.reason, loss["amount"], loss["symbol"], buy)


def _payout_settled(r: Any, oid: str, o: LegOutcome, info: MinedInfo, now_ms: int) -> None:
    raw = r.get(Keys.order(oid))
    if raw is None:
        return
    first = json.loads(raw)

    def step(doc: dict[str, Any], rd: _Reader, p: Any) -> list[tuple[str, Any]] | None:
        payout = _leg(doc, "payout")
        if payout.get("txHash") == info.tx_hash:
            if payout.get("blockHash") == info.block_hash:
                return None
            _mark(payout, info, payout["state"])
            return []
        if doc["state"] == S.REFUNDED.value:
            # Paid after the trader reclaimed: the vault paid twice. Book it and say so.
            log.error("ALERT order %s: payout settled after a refund (operator loss)", oid)
            doc["alert"] = f"payout settled on chain {info.chain_id} after the refund"
        elif doc["state"] == S.PULL_SETTLED.value or (doc["state"] == S.CONFIRMED.value and doc.get("tier") == Tier.FAST.value):
            _set_state(doc, S.SETTLED, now_ms=now_ms)  # a fast payout may come first
        else:
            return None
        _mark(payout, info, "settled")
        _release(rd, p, _invheld_key(doc), int(doc["buyAmount"]))
        _expect(rd, p, info.chain_id, int(o.leg["token"]), -int(o.leg["amount"]))
        return []

    _update(r, oid, step, [_invheld_key(first), Keys.expect(info.chain_id)])


def apply_final(r: Any, chain_id: int, batch: int, legs: Sequence[dict[str, Any]], final_block: int) -> None:
    """The batch is at finality depth: mark its legs final; finalize orders whose both legs
    are; queue their pulls for confirmation on the sell chain."""
    now_ms = int(time.time() * 1000)
    rebalance.apply_aux_final(r, chain_id, batch, legs, final_block)
    for entry in legs:
        if entry["kind"] not in ("pull", "payout"):
            continue
        oid = entry["orderId"]
        kind = entry["kind"]
        queued: list[tuple[int, str]] = []

        def step(doc: dict[str, Any], rd: _Reader, p: Any, kind: str = kind, queued: list[tuple[int, str]] = queued) -> list[tuple[str, Any]] | None:
            leg = _leg(doc, kind)
            if leg.get("batch") != batch or leg.get("state") not in ("settled", "failed"):
                return None
            leg["state"] = "final" if leg["state"] == "settled" else "failed_final"
            leg["finalAt"] = now_ms
            leg["finalBlock"] = final_block
            pull, payout = _leg(doc, "pull"), _leg(doc, "payout")
            # A fast order whose pull failed ends here too: paid, nothing taken, loss booked.
            pull_done = pull.get("state") == "final" or (pull.get("state") == "failed_final" and "operatorLoss" in doc)
            if pull_done and payout.get("state") == "final" and doc["state"] == S.SETTLED.value:
                _set_state(doc, S.FINALIZED, now_ms=now_ms)
                doc["trustWindowMs"] = now_ms - int(doc["confirmedAt"])
                if pull.get("pullRef") is not None:
                    sell = int(doc["order"]["sellChainId"])
                    p.sadd(Keys.confirms(sell), pull["pullRef"])
                    queued.append((sell, pull["pullRef"]))
            return []

        _update(r, oid, step)


def apply_reclaimed(r: Any, chain_id: int, order_id: str, amount: int, tx_hash: str, block: int) -> dict[str, Any] | None:
    """The trader reclaimed a pulled order from the vault (`Reclaimed`): `refunded` if its
    payout had not settled; an alert otherwise (the vault paid out and refunded)."""
    now_ms = int(time.time() * 1000)
    raw = r.get(Keys.order(order_id))
    if raw is None:
        log.error("ALERT chain %d: Reclaimed for unknown order %s", chain_id, order_id)
        return None
    first = json.loads(raw)

    def step(doc: dict[str, Any], rd: _Reader, p: Any) -> list[tuple[str, Any]] | None:
        pull = _leg(doc, "pull")
        if pull.get("refundTx") == tx_hash:
            return None
        pull.update(refundTx=tx_hash, refundBlock=block)
        entry = json.loads(rd.hget(Keys.log_legs(chain_id), str(pull["logIndex"])))
        _expect(rd, p, chain_id, int(entry["token"]), -amount)
        if doc["state"] == S.PULL_SETTLED.value:
            _set_state(doc, S.REFUNDED, now_ms=now_ms, reason=(
                f"the payout did not settle in time; the trader reclaimed {amount} from the vault on chain {chain_id} (tx {tx_hash})"))
        else:
            log.error("ALERT order %s: reclaimed in state %s (operator loss)", order_id, doc["state"])
            doc["alert"] = f"reclaimed on chain {chain_id} in state {doc['state']}"
        return []

    return _update(r, order_id, step, [Keys.expect(chain_id), _held_key(first)])
