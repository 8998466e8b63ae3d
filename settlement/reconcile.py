"""Reconciliation: the vault's on-chain balances against what the ledger says they are.

Per chain and token, the ledger expects

    vault balance = baseline + Σ settled pulls − Σ settled payouts
                  + Σ MAKER_IN − Σ MAKER_OUT − Σ pool amounts in + Σ pool amounts out

where the baseline is the vault's balance before its first batch (the inventory the
deploy moved in), captured once while the on-chain cursor is still 0, and the sums are
kept by the lifecycle (orders) and settlement/rebalance.py (maker and pool legs) as
batches are mined (`stl:{chain}:expect`), from the vault's events. Both sides are read at
one block, and only when the on-chain cursor at that block equals the end of the batches
the ledger has applied: a batch mined but not yet applied (or reorged out) would show a
difference that is only timing. Any real difference is logged as an alert and written
to the report (`stl:{chain}:recon`), to the wei. The report also shows the chain's booked
operator losses (failed pulls behind fast payouts, failed MAKER_INs: nothing moved, so
they are no difference) and its failed pool trades.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from eth_hash.auto import keccak

from settlement import lifecycle, rebalance
from settlement.batching import Keys
from settlement.submitter import ChainContext
from settlement.vault import Reclaimed, decode_logs

__all__ = ["applied_key", "baseline_key", "ensure_baseline", "follow_reclaims", "reconcile_chain"]

RECLAIMED_TOPIC = keccak(b"Reclaimed(bytes32,uint256,address,uint256)")

log = logging.getLogger("crossbook.reconcile")


def baseline_key(chain: int) -> str:
    return f"stl:{chain}:baseline"


def applied_key(chain: int) -> str:
    """End of the log range whose batches the lifecycle has applied (mined)."""
    return Keys.applied(chain)


def ensure_baseline(r: Any, ctx: ChainContext) -> bool:
    """Record the vault's balances as the baseline if none is recorded and nothing is
    settled yet (cursor 0 at the block read). True if a baseline exists afterwards."""
    if r.exists(baseline_key(ctx.chain_id)):
        return True
    block = ctx.port.head()
    index, _ = ctx.port.cursor(ctx.vault, block)
    if index != 0:
        return False
    bal = {str(k): str(ctx.port.balance(t, ctx.vault, block)) for k, t in enumerate(ctx.tokens)}
    bal["block"] = str(block)
    r.hsetnx(baseline_key(ctx.chain_id), "block", str(block))
    # hsetnx per field: a racing reconcile writes the same values at worst.
    for k, v in bal.items():
        r.hsetnx(baseline_key(ctx.chain_id), k, v)
    return True


def reconcile_chain(r: Any, ctx: ChainContext) -> dict[str, Any]:
    chain = ctx.chain_id
    now = time.time()
    report: dict[str, Any] = {"chainId": chain, "at": now, "vault": ctx.vault}
    if not ensure_baseline(r, ctx):
        report.update(status="no_baseline", message="batches settled before a baseline was taken")
        r.set(Keys.recon(chain), json.dumps(report))
        log.error("ALERT reconcile chain %d: no baseline", chain)
        return report
    block = ctx.port.head()
    index, _ = ctx.port.cursor(ctx.vault, block)
    applied = int(r.get(applied_key(chain)) or 0)
    report.update(block=block, cursor=index, applied=applied)
    if index != applied:
        report.update(status="in_flight", message=f"cursor {index} vs applied {applied}: a batch is between chain and ledger")
        r.set(Keys.recon(chain), json.dumps(report))
        return report
    base = {k.decode() if isinstance(k, bytes) else k: int(v) for k, v in r.hgetall(baseline_key(chain)).items()}
    exp = {k.decode() if isinstance(k, bytes) else k: int(v) for k, v in r.hgetall(Keys.expect(chain)).items()}
    tokens = []
    diffs = 0
    for k, t in enumerate(ctx.tokens):
        actual = ctx.port.balance(t, ctx.vault, block)
        expected = base.get(str(k), 0) + exp.get(str(k), 0)
        diff = actual - expected
        diffs += diff != 0
        tokens.append({"index": k, "token": t, "actual": str(actual), "expected": str(expected), "diff": str(diff)})
    report.update(status="ok" if diffs == 0 else "mismatch", tokens=tokens)
    report["losses"] = {(k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
                        for k, v in r.hgetall(rebalance.losses_key(chain)).items()}
    report["poolFailed"] = int(r.llen(rebalance.poolfailed_key(chain)))
    r.set(Keys.recon(chain), json.dumps(report))
    if diffs:
        log.error("ALERT reconcile chain %d at block %d: %d token(s) differ: %s", chain, block, diffs,
                  [x for x in tokens if x["diff"] != "0"])
    return report


def follow_reclaims(r: Any, ctx: ChainContext, head: int) -> int:
    """Apply the vault's `Reclaimed` events (traders taking back a pulled order after the
    reclaim timeout) to the ledger. Scans from the last scanned block minus the finality
    depth, so an event moved by a reorg is seen again (applying is idempotent by tx)."""
    key = f"stl:{ctx.chain_id}:reclaimscan"
    last = r.get(key)
    start = max(0, (int(last) if last is not None else head) - ctx.finality_depth)
    if start > head:
        return 0
    n = 0
    for raw in ctx.port.logs(ctx.vault, RECLAIMED_TOPIC, start, head):
        for ev in decode_logs([raw], ctx.vault):
            if isinstance(ev, Reclaimed):
                lifecycle.apply_reclaimed(r, ctx.chain_id, "0x" + ev.order_hash.hex(), ev.amount, raw["transactionHash"], raw["blockNumber"])
                n += 1
    r.set(key, str(head))
    return n
