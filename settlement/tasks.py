"""Celery tasks: parse arguments, call a service, record an idempotency key.

- `tick(chain)`: follow the chain's open batches (receipts, reorgs, finality), keep the
  in-flight batch moving (re-queue a proof nobody is working on, a submission not sent),
  or cut the next batch when the window says so.
- `prove(chain, n)`: prove batch n, then queue its submission.
- `submit(chain, n)`: sign and send batch n's `settle` (a group's: once every member is
  proven, one `settleMany` for all of them).
- `reconcile(chain)`: vault balances against the ledger.

Every task may run twice or be killed at any line: each step re-reads the batch state
from Redis and does only what is still missing (see the services' docstrings).
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from functools import cache
from pathlib import Path
from typing import Any

import redis
import requests
from celery import shared_task
from celery.signals import celeryd_after_setup

from app.manifest import Manifest
from app.settings import get_settings
from settlement import lifecycle, prover_service, rebalance
from settlement import reconcile as reconcile_service
from settlement.batching import BatchState, Keys, cut_batch, delete_if, group_of, load_batch
from settlement.prover_gate import ProverGate, api_request_rate
from settlement.submitter import (
    CONFIRM_LOCK,
    ChainContext,
    SubmitError,
    Web3Chain,
    backing_off,
    follow_confirms,
    follow_open,
    send_confirms,
    submit_batch,
    vault_ahead,
)
from settlement.tier import load_rules
from settlement.window import policy_for

__all__ = ["context", "prove", "reconcile", "redis_client", "submit", "tick"]

log = logging.getLogger("crossbook.tasks")

# A proof nobody heartbeats for this long after its cut is queued again (worker died).
# A batch still waiting in the queue behind other proofs is queued again too; the copy
# finds the batch claimed or proven and returns at once.
PROVE_STALL_SECONDS = 4.0
HEARTBEAT_TTL = 3
# The prover's claim on a batch is refreshed, like it is released, only by its owner.
_REFRESH_CLAIM = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2]) end return false"
_RPC_ERRORS = (requests.ConnectionError, requests.Timeout, ConnectionError, TimeoutError, SubmitError)


@cache
def redis_client() -> redis.Redis:
    return redis.Redis.from_url(os.environ.get("REDIS_URL") or get_settings().redis_url or "redis://127.0.0.1:6379/0")


_ctx: dict[int, tuple[float, ChainContext]] = {}


def _manifest_path() -> Path:
    return Path(get_settings().manifest)


def context(chain_id: int) -> ChainContext:
    """The chain's context from the manifest (re-read when the manifest file changes)."""
    path = _manifest_path()
    mtime = path.stat().st_mtime
    hit = _ctx.get(chain_id)
    if hit is not None and hit[0] == mtime:
        return hit[1]
    m = Manifest.load(path)
    c = m.chain(chain_id)
    if "settlement" not in c.contracts:
        raise RuntimeError(f"chain {chain_id}: no settlement vault in the manifest")
    key = get_settings().operator_key or m.operator.private_key
    symbols = list(m.assets)
    ctx = ChainContext(
        chain_id=chain_id,
        vault=c.contracts["settlement"],
        operator=m.operator.address,
        operator_key=key,
        finality_depth=c.finality_depth,
        block_time=c.block_time,
        asset_index={s: i for i, s in enumerate(symbols)},
        tokens=[c.tokens[s].address for s in symbols],
        port=Web3Chain(c.rpc_url),
        extra={"pools": {f"{chain_id}:{p.address.lower()}": (p.symbol0, p.symbol1) for p in c.pools}},
    )
    _ctx[chain_id] = (mtime, ctx)
    return ctx


@celeryd_after_setup.connect
def _warm_prover(sender: Any, instance: Any, **_: Any) -> None:
    """A worker that consumes `prove` loads the small circuits and their keys at start,
    so the first batches do not pay for it (a few seconds)."""
    try:
        queues = set(instance.app.amqp.queues.consume_from or {})
    except AttributeError:
        queues = set()
    if "prove" in queues:
        prover_service.warm_keys((4, 8, 16))


@cache
def _gate() -> ProverGate:
    """This prover's gate (one sampler thread per process, started with the first proof)."""
    s = get_settings()
    gate = ProverGate(lambda: api_request_rate(redis_client()), busy_rate=s.prover_yield_requests_per_second, max_hold_seconds=s.prover_max_hold_seconds)
    gate.start()
    return gate


def _idem(key: str, ttl: int = 86400) -> bool:
    """Record that `key`'s step is done; False if it was already recorded."""
    return bool(redis_client().set(Keys.idem(key), "1", nx=True, ex=ttl))


@shared_task(name="settlement.tick", autoretry_for=_RPC_ERRORS, retry_backoff=True, max_retries=3, ignore_result=True)
def tick(chain_id: int) -> str:
    r = redis_client()
    # One tick per chain at a time; a tick that dies frees the flag within its TTL.
    if not r.set(f"stl:{chain_id}:ticking", "1", nx=True, ex=15):
        return "busy"
    try:
        return _tick(r, int(chain_id))
    finally:
        r.delete(f"stl:{chain_id}:ticking")


def _tick(r: Any, chain_id: int) -> str:
    ctx = context(chain_id)
    # Fast tier: small cross-chain payouts enter their buy chain's log now, not after the pull.
    lifecycle.enqueue_fast_payouts(r, chain_id, load_rules(_manifest_path(), enabled=get_settings().fast_tier_enabled), ctx.asset_index)
    follow_open(r, ctx)
    reconcile_service.ensure_baseline(r, ctx)
    head = ctx.port.head()
    follow_confirms(r, ctx, head)
    reconcile_service.follow_reclaims(r, ctx, head)
    held = r.get(Keys.lock(chain_id))
    if held is not None and held.decode() == CONFIRM_LOCK:
        return "confirming"
    if held is not None:
        n = int(held)
        doc = load_batch(r, chain_id, n)
        if doc is None:
            r.delete(Keys.lock(chain_id))
            return "stale lock"
        # The lock holds a batch, or the first batch of a group cut together.
        docs = [doc] + [load_batch(r, chain_id, m) for m in group_of(doc)[1:]]
        for d in docs:
            if d is None:
                continue
            m = int(d["number"])
            stalled = d["state"] == BatchState.CUT and not r.exists(Keys.proving(chain_id, m)) and time.time() - d["cutAt"] > PROVE_STALL_SECONDS
            # Nobody is proving it (the prover died, or the task was lost): queue it again.
            if stalled and r.set(f"stl:{chain_id}:requeue:{m}", "1", nx=True, ex=int(PROVE_STALL_SECONDS) + 2):
                log.warning("chain %d batch %d: no prover heartbeat; re-queued", chain_id, m)
                prove.apply_async((chain_id, m), queue="prove")
        states = [d["state"] if d is not None else "missing" for d in docs]
        if set(states) == {BatchState.PROVED} and r.set(f"stl:{chain_id}:resubmit:{n}", "1", nx=True, ex=5):
            submit.apply_async((chain_id, n), queue="settle")
        elif set(states) <= {BatchState.REVERTED, BatchState.FINAL, "missing"}:
            delete_if(r, Keys.lock(chain_id), str(n))
        return f"in flight {n}:{'/'.join(states)}"
    settings = get_settings()
    policy = prover_service.measured_policy(r, policy_for(
        chain_id, ctx.block_time, ctx.finality_depth, target_batch=min(settings.settlement_batch_size, settings.settlement_max_batch)))
    if backing_off(r, chain_id):
        return "backing off after reverts"
    if any(
        (b := load_batch(r, chain_id, int(x))) is not None and b["state"] == BatchState.SIGNED
        for x in r.smembers(Keys.open(chain_id))
    ):
        # A reorged batch is being re-sent: the cursor will move past it, cut after that.
        return "waiting for a re-sent batch"
    cursor = ctx.port.cursor(ctx.vault)
    if vault_ahead(r, chain_id, cursor[0]) is not None:
        return "vault ahead of the ledger"
    # Pending pool flows are netted into POOL legs as the batch is cut (report: `netting`).
    doc = cut_batch(r, policy, cursor, hook=rebalance.netting_hook(r, chain_id, ctx.asset_index),
                    max_batch=settings.settlement_max_batch)
    if doc is None:
        if int(r.get(Keys.log_next(chain_id)) or 0) <= cursor[0] and send_confirms(r, ctx):
            return "confirms sent"
        return "idle"
    group = group_of(doc)
    log.info("chain %d batch %d cut: [%d,+%d) after %.2fs%s", chain_id, doc["number"], doc["start"], doc["count"], doc["oldestWait"],
             f"; group {group} (backlog beyond one batch, settled in one transaction)" if len(group) > 1 else "")
    for m in group:  # each member on the prove queue: two prove workers take two at once
        prove.apply_async((chain_id, m), queue="prove")
    return f"cut {'+'.join(str(m) for m in group)}"


@shared_task(name="settlement.prove", ignore_result=True)
def prove(chain_id: int, number: int) -> str:
    r = redis_client()
    # Claim the batch first: a second task for it (the tick queues one again when the
    # first waits in the queue longer than PROVE_STALL_SECONDS) must not prove it a second
    # time while this one does. The claim's short TTL, refreshed while alive, lets a
    # killed prover's claim lapse in seconds.
    key, token = Keys.proving(chain_id, number), f"{os.getpid()}:{uuid.uuid4().hex}"
    if not r.set(key, token, nx=True, ex=HEARTBEAT_TTL):
        return "being proven by another worker"
    doc = load_batch(r, chain_id, number)
    if doc is None or doc["state"] != BatchState.CUT:
        delete_if(r, key, token)
        return "done already"
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(1.0):
            r.eval(_REFRESH_CLAIM, 1, key, token, HEARTBEAT_TTL)

    hb = threading.Thread(target=beat, daemon=True)
    hb.start()
    try:
        result = prover_service.prove_batch(doc, gate=_gate())
        stored = prover_service.record(r, doc, result)
    finally:
        stop.set()
        hb.join()
        delete_if(r, key, token)
    _idem(f"prove:{chain_id}:{number}")
    log.info("chain %d batch %d proved at capacity %d in %.2fs (held %.1fs while the API was busy)",
             chain_id, number, result.capacity, result.seconds, result.held_seconds)
    if stored["state"] == BatchState.PROVED:
        submit.apply_async((chain_id, number), queue="settle")
    return f"proved {number}"


@shared_task(name="settlement.submit", autoretry_for=_RPC_ERRORS, retry_backoff=True, max_retries=5, ignore_result=True)
def submit(chain_id: int, number: int) -> str:
    r = redis_client()
    doc = submit_batch(r, context(chain_id), number)
    if doc is not None and doc["state"] == BatchState.SIGNED:
        _idem(f"submit:{chain_id}:{number}")
    return f"{number}: {doc['state'] if doc else 'missing'}"


@shared_task(name="settlement.reconcile", autoretry_for=_RPC_ERRORS, retry_backoff=True, max_retries=2, ignore_result=True)
def reconcile(chain_id: int) -> str:
    report = reconcile_service.reconcile_chain(redis_client(), context(chain_id))
    return str(report["status"])
