"""Operator view of one chain's settlement, and the action that unblocks a stuck chain.

A chain is stuck when the batch at its cursor keeps reverting (docs/pipeline.md §11):
the log is committed, so no leg can be skipped, and after `REVERT_FREE_TRIES` reverts
of the same range the pipeline stops cutting for a growing pause (`stl:{c}:backoff`,
5 s doubling to 300 s). The usual cause is a vault short of inventory for a payout.
`chain_report` shows what an operator needs to see that: backlog, the batch in flight,
the last batches with their revert reasons, the revert counts and the backoff left, the
last reconciliation, and, read from the chain, the vault's balance beside what the
backlog's payouts will take from it. Once the vault is topped up, `clear_backoff` drops
the pause and the revert counts, so the next tick cuts the range again at once instead
of after the pause (and a new revert starts counting from zero).

A chain is stuck too when the vault's cursor is past the batches the ledger applied
(`submitter.vault_ahead`): legs settled by transactions the pipeline never saw. No cut
happens then, since one from the cursor would skip those legs; the report says so.

The fast tier (settlement/tier.py) per sell chain: `fast_tier_report` shows its switch
(on, or off and why), its limits, the exposure outstanding (in all and per trader) and
the losses in the window; `set_fast_tier` is the operator's switch, the only way back on
after the loss budget turned it off.

Redis only, plus the chain through `ChainPort` when a context is given; no Celery.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from settlement.batching import Keys, chain_status, load_batch
from settlement.submitter import REVERT_FREE_TRIES, ChainContext, ahead_reason
from settlement.tier import (
    FastTierLimits,
    Switch,
    exposure_key,
    fast_losses_key,
    switch_key,
    trader_exposure_key,
    window_losses,
)

__all__ = [
    "BackoffCleared",
    "backoff_key",
    "chain_report",
    "clear_backoff",
    "fast_tier_report",
    "inventory_needs",
    "reverts_key",
    "set_fast_tier",
]

# Kinds of log leg that move funds out of the vault.
_OUTGOING = ("payout", "maker_out")


def backoff_key(chain: int) -> str:
    return f"stl:{chain}:backoff"


def reverts_key(chain: int, start: int | str) -> str:
    return f"stl:{chain}:reverts:{start}"


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def _reverts(r: Any, chain: int) -> dict[int, int]:
    prefix = reverts_key(chain, "")
    out = {}
    for k in r.scan_iter(match=prefix + "*", count=200):
        v = r.get(k)
        if v is not None:
            out[int(_s(k)[len(prefix):])] = int(v)
    return dict(sorted(out.items()))


def inventory_needs(r: Any, chain: int, start: int, end: int) -> dict[int, int]:
    """Token index -> what the legs [start, end) of the chain's log pay out of the vault.

    Pulls in the same range are not counted against it: a pull can still fail on chain
    (allowance revoked), so only the outgoing side is certain."""
    if end <= start:
        return {}
    need: dict[int, int] = {}
    for raw in r.hmget(Keys.log_legs(chain), [str(i) for i in range(start, end)]):
        if raw is None:
            continue
        leg = json.loads(raw)
        if leg["kind"] in _OUTGOING:
            need[int(leg["token"])] = need.get(int(leg["token"]), 0) + int(leg["amount"])
    return need


def chain_report(
    r: Any, chain: int, ctx: ChainContext | None = None, *, recent: int = 5, fast: FastTierLimits | None = None
) -> dict[str, Any]:
    """Everything `crossbook settlement status` shows for one chain (JSON-ready).

    With `ctx`, the vault is read at one block: its cursor and, per token the backlog
    pays out, its balance, the amount needed and the shortfall (0 when covered). `fast`:
    the chain's fast-tier limits (None: no fast tier for pulls on it)."""
    now = time.time()
    doc = chain_status(r, chain, recent=recent)
    for b in doc["batches"]:
        full = load_batch(r, chain, int(b["number"]))
        if full is not None and full.get("reason"):
            b["reason"] = full["reason"]
    if doc["inFlight"] is not None and doc["inFlight"].isdigit():
        b = load_batch(r, chain, int(doc["inFlight"]))
        doc["inFlightState"] = b["state"] if b else None
    reverts = _reverts(r, chain)
    doc["reverts"] = {str(k): v for k, v in reverts.items()}
    start = r.get(backoff_key(chain))
    ttl = int(r.ttl(backoff_key(chain))) if start is not None else -2
    doc["backoff"] = {"start": int(start), "secondsLeft": max(ttl, 0)} if start is not None else None
    rec = doc.get("reconcile")
    if rec and "at" in rec:
        rec["ageSeconds"] = round(now - float(rec["at"]), 1)
    if ctx is not None:
        block = ctx.port.head()
        index, _head = ctx.port.cursor(ctx.vault, block)
        log_next = int(doc["logLength"])
        need = inventory_needs(r, chain, index, log_next)
        symbols = {i: s for s, i in ctx.asset_index.items()}
        inventory = []
        for k in sorted(need):
            bal = ctx.port.balance(ctx.tokens[k], ctx.vault, block)
            inventory.append({
                "token": k, "symbol": symbols.get(k, str(k)), "balance": str(bal),
                "needed": str(need[k]), "shortfall": str(max(0, need[k] - bal)),
            })
        doc["onChain"] = {"block": block, "cursor": index, "pending": max(0, log_next - index), "inventory": inventory}
    doc["stuck"] = _diagnose(doc, reverts)
    doc["fastTier"] = fast_tier_report(r, chain, fast)
    return doc


def fast_tier_report(r: Any, chain: int, limits: FastTierLimits | None, *, now_ms: int | None = None, top: int = 3) -> dict[str, Any]:
    """The fast tier of pulls on `chain`: state and why, limits, exposure, losses."""
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    sw = Switch.from_hash(r.hgetall(switch_key(chain)))
    traders = {_s(k): int(v) for k, v in r.hgetall(trader_exposure_key(chain)).items()}
    doc: dict[str, Any] = {
        "configured": limits is not None,
        "on": limits is not None and sw.on,
        "switch": {"state": "on" if sw.on else "off", "by": sw.by or None, "reason": sw.reason or None, "at": sw.at or None},
        "exposureUsd6": str(int(r.get(exposure_key(chain)) or 0)),
        "traders": len(traders),
        "largestTraders": [{"trader": t, "usd6": str(v)} for t, v in sorted(traders.items(), key=lambda x: -x[1])[:top]],
    }
    if limits is None:
        doc["reason"] = "no fast tier for pulls on this chain (fastTier.maxValueUsd6 is 0, or CROSSBOOK_FAST_TIER_ENABLED=false)"
        return doc
    window = r.zrangebyscore(fast_losses_key(chain), f"({now_ms - limits.loss_window * 1000}", "+inf")
    counted = r.zrangebyscore(fast_losses_key(chain), f"({limits.counted_since(sw, now_ms)}", "+inf")
    doc["reason"] = None if sw.on else sw.reason
    doc["limits"] = {
        "maxValueUsd6": str(limits.max_value), "exposureCapUsd6": str(limits.exposure_cap),
        "traderCapUsd6": None if limits.trader_cap is None else str(limits.trader_cap),
        "lossBudgetUsd6": None if limits.loss_budget is None else str(limits.loss_budget),
        "lossWindowSeconds": limits.loss_window,
    }
    doc["losses"] = {
        "inWindow": len(window), "inWindowUsd6": str(window_losses(window)),
        # What the budget counts: the window, minus what the operator acknowledged by turning it on.
        "countedUsd6": str(window_losses(counted)), "countedSince": sw.count_from or None,
    }
    return doc


def set_fast_tier(r: Any, chain: int, on: bool, reason: str = "", *, now_ms: int | None = None) -> Switch:
    """The operator turns the chain's fast tier on or off. Turning it on also starts the
    loss budget afresh: the losses booked so far were seen by whoever turned it on."""
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    prev = Switch.from_hash(r.hgetall(switch_key(chain)))
    sw = Switch(
        on, "operator", reason or f"turned {'on' if on else 'off'} by the operator",
        now_ms, now_ms if on else prev.count_from,
    )
    r.hset(switch_key(chain), mapping=sw.to_hash())
    return sw


def _diagnose(doc: dict[str, Any], reverts: dict[int, int]) -> str | None:
    """One line for an operator when the chain is not moving on its own, else None."""
    short = [x for x in doc.get("onChain", {}).get("inventory", []) if int(x["shortfall"]) > 0]
    worst = max(reverts.values(), default=0)
    cursor = doc.get("onChain", {}).get("cursor")
    # With a batch in flight the cursor may pass `settled` until its receipt is applied.
    ahead = cursor is not None and doc["inFlight"] is None and cursor > doc["settled"]
    if doc["backoff"] is None and worst <= REVERT_FREE_TRIES and not short and not ahead:
        return None
    if ahead:
        return ahead_reason(cursor, doc["settled"])
    parts = []
    if doc["backoff"] is not None:
        parts.append(f"backing off ({doc['backoff']['secondsLeft']}s left) after the range at {doc['backoff']['start']} reverted {reverts.get(doc['backoff']['start'], worst)} times")
    elif worst:
        parts.append(f"the range at {max(reverts, key=lambda k: reverts[k])} reverted {worst} times")
    last = next((b["reason"] for b in doc["batches"] if b.get("state") == "reverted" and b.get("reason")), None)
    if last:
        parts.append(f"last reason: {last[:200]}")
    if short:
        parts.append("vault short of " + ", ".join(f"{x['shortfall']} {x['symbol']}" for x in short) + " (base units): top it up")
    parts.append(f"then `crossbook settlement clear-backoff --chain {doc['chainId']}`")
    return "; ".join(parts)


@dataclass(frozen=True, slots=True)
class BackoffCleared:
    chain_id: int
    had_backoff: bool
    reverts: dict[int, int]  # the counts that were dropped, by range start

    def to_json(self) -> dict[str, Any]:
        return {"chainId": self.chain_id, "hadBackoff": self.had_backoff, "reverts": {str(k): v for k, v in self.reverts.items()}}


def clear_backoff(r: Any, chain: int) -> BackoffCleared:
    """Drop the chain's revert pause and revert counts: the next tick cuts again.

    Safe at any time: the pause only saves proofs of a range that would revert anyway,
    and the vault's cursor check makes a repeated settle harmless."""
    reverts = _reverts(r, chain)
    keys = [backoff_key(chain), *(reverts_key(chain, s) for s in reverts)]
    had = bool(r.exists(backoff_key(chain)))
    r.delete(*keys)
    return BackoffCleared(chain, had, reverts)
