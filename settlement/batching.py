"""Batching: when and what to cut from a chain's order log, and the pipeline's Redis keys.

A batch is the contiguous range of one chain's order log that starts at the vault's
on-chain cursor. It is cut when the chain's `WindowPolicy` says so (enough legs pending,
or the oldest has waited `max_wait`), capped at the largest circuit capacity. Only one
batch per chain is in flight (cut, proven, submitted, not yet mined): the next batch
starts where this one ends, which is only known for sure once it is on chain. A per-chain
Redis lock (`stl:{chain}:lock`, holding the batch number) enforces that; the lifecycle
releases it when the batch is mined, so cutting the next batch overlaps with the
previous one's finality wait. A backlog of more than one maximum batch is cut as a
**group** of consecutive batches (`plan_group`, at most MAX_GROUP): each is its own
document and proof, the lock holds the first one's number, every member's `group` lists
them all, and one `settleMany` transaction settles them together.

Redis keys of the pipeline (the ledger's own keys are in app/services/ledger.py):

    stl:{chain}:lock              -> batch (or group's first batch) number in flight (no TTL)
    stl:{chain}:batch:seq         -> last batch number used
    stl:{chain}:batch:{n}         -> batch JSON (range, heads, proof, tx, state, timings)
    stl:{chain}:applied           -> end of the log range whose mined batches are applied
    stl:{chain}:open              -> set of batch numbers submitted but not final
    stl:{chain}:proving:{n}       -> prover heartbeat (TTL): someone is proving batch n
    stl:{chain}:nonce             -> the operator's next nonce on this chain
    stl:{chain}:confirms          -> set of pullRefs whose payouts are final elsewhere
    stl:{chain}:expect            -> hash token index -> vault balance change the ledger expects
    stl:{chain}:recon             -> last reconciliation report (JSON)
    stl:prooftime:{capacity}      -> measured proof seconds (moving average)
    stl:idem:{key}                -> idempotency keys of finished task steps
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any, Protocol

from settlement.window import WindowPolicy
from settlement.zk.batch import CAPACITIES, Batch
from settlement.zk.legs import Leg, LegKind

__all__ = [
    "LEG_KINDS",
    "MAX_GROUP",
    "BatchState",
    "CutHook",
    "CutPlan",
    "Keys",
    "chain_status",
    "cut_batch",
    "delete_if",
    "group_of",
    "leg_from_json",
    "load_batch",
    "oldest_pending_at",
    "plan_cut",
    "plan_group",
    "save_batch",
]

MAX_BATCH = max(CAPACITIES)
# Most batches cut (and settled in one transaction) at once: 4 x 64 pulls is ~5.5M gas.
MAX_GROUP = 4
# The log's `kind` strings (ledger.py writes "pull"; the pipeline "payout").
LEG_KINDS = {
    "pull": LegKind.PULL,
    "payout": LegKind.PAYOUT,
    "maker_in": LegKind.MAKER_IN,
    "maker_out": LegKind.MAKER_OUT,
    "pool": LegKind.POOL,
}


class BatchState:
    """A batch's progress. Strings, stored in the batch JSON."""

    CUT = "cut"  # range fixed, not proven yet
    PROVED = "proved"
    SIGNED = "signed"  # raw transaction stored (and maybe sent)
    MINED = "mined"  # in a block, events applied
    FINAL = "final"  # at the chain's finality depth
    REVERTED = "reverted"  # the transaction reverted; the range will be cut again


class Keys:
    """Key names, in one place."""

    @staticmethod
    def lock(chain: int) -> str:
        return f"stl:{chain}:lock"

    @staticmethod
    def seq(chain: int) -> str:
        return f"stl:{chain}:batch:seq"

    @staticmethod
    def batch(chain: int, n: int) -> str:
        return f"stl:{chain}:batch:{n}"

    @staticmethod
    def applied(chain: int) -> str:
        """End of the log range whose mined batches the lifecycle has applied."""
        return f"stl:{chain}:applied"

    @staticmethod
    def open(chain: int) -> str:
        return f"stl:{chain}:open"

    @staticmethod
    def proving(chain: int, n: int) -> str:
        return f"stl:{chain}:proving:{n}"

    @staticmethod
    def nonce(chain: int) -> str:
        return f"stl:{chain}:nonce"

    @staticmethod
    def confirms(chain: int) -> str:
        return f"stl:{chain}:confirms"

    @staticmethod
    def expect(chain: int) -> str:
        return f"stl:{chain}:expect"

    @staticmethod
    def recon(chain: int) -> str:
        return f"stl:{chain}:recon"

    @staticmethod
    def prooftime(capacity: int) -> str:
        return f"stl:prooftime:{capacity}"

    @staticmethod
    def idem(key: str) -> str:
        return f"stl:idem:{key}"

    @staticmethod
    def log_legs(chain: int) -> str:
        return f"log:{chain}:legs"

    @staticmethod
    def log_next(chain: int) -> str:
        return f"log:{chain}:next"

    @staticmethod
    def order(order_id: str) -> str:
        return f"order:{order_id}"


@dataclass(frozen=True, slots=True)
class CutPlan:
    start: int
    end: int  # exclusive

    @property
    def count(self) -> int:
        return self.end - self.start


def plan_cut(
    policy: WindowPolicy, cursor: int, log_next: int, oldest_wait: float, *, max_batch: int = MAX_BATCH
) -> CutPlan | None:
    """The range to cut now, or None. Pure.

    pending = log_next − cursor legs wait; the policy decides on the count and the oldest
    leg's age, and a batch never exceeds `max_batch` (the largest circuit).
    """
    pending = log_next - cursor
    if pending <= 0 or not policy.should_cut(pending, oldest_wait):
        return None
    return CutPlan(cursor, cursor + min(pending, max_batch))


def plan_group(start: int, end: int, *, max_batch: int = MAX_BATCH, max_batches: int = MAX_GROUP) -> list[CutPlan]:
    """Split the pending range [start, end) into consecutive batches of `max_batch` legs,
    the last one taking the rest, at most `max_batches` of them. Pure.

    A range within one maximum batch stays one batch; a backlog beyond it becomes a group
    that one `settleMany` transaction settles (one proof check per capacity for all)."""
    out: list[CutPlan] = []
    while start < end and len(out) < max(1, max_batches):
        out.append(CutPlan(start, min(end, start + max_batch)))
        start = out[-1].end
    return out


def group_of(doc: dict[str, Any]) -> list[int]:
    """The numbers of the batches submitted together with batch `doc` (itself included)."""
    return [int(x) for x in doc.get("group") or [doc["number"]]]


def leg_from_json(doc: dict[str, Any]) -> Leg:
    """A log entry (ledger.py's leg JSON) as the circuit's Leg."""
    return Leg(
        kind=LEG_KINDS[doc["kind"]],
        account=int(doc["account"], 16),
        token=int(doc["token"]),
        amount=int(doc["amount"]),
        min_amount=int(doc.get("minAmount", "0")),
        order_ref=int(doc["orderRef"]),
    )


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def oldest_pending_at(r: Any, chain: int, cursor: int) -> float | None:
    """When the leg at `cursor` (the oldest pending one) entered the log, in seconds."""
    raw = r.hget(Keys.log_legs(chain), str(cursor))
    if raw is None:
        return None
    leg = json.loads(raw)
    if "at" in leg:  # payout legs carry their append time
        return float(leg["at"]) / 1000
    doc = r.get(Keys.order(leg["orderId"]))
    return float(json.loads(doc)["confirmedAt"]) / 1000 if doc else time.time()


def load_batch(r: Any, chain: int, n: int) -> dict[str, Any] | None:
    raw = r.get(Keys.batch(chain, n))
    return json.loads(raw) if raw else None


_DELETE_IF = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"


def delete_if(r: Any, key: str, value: str) -> bool:
    """Delete `key` only while it holds `value` (a lock or claim released by its owner
    alone, never one taken over by someone else since)."""
    return bool(r.eval(_DELETE_IF, 1, key, value))


def save_batch(r: Any, doc: dict[str, Any]) -> None:
    r.set(Keys.batch(doc["chainId"], doc["number"]), json.dumps(doc, separators=(",", ":")))


class CutHook(Protocol):
    """Legs that are appended only when a batch is cut (the netted POOL legs,
    settlement/rebalance.py): pending work counts as one pending leg for the window."""

    def pending_since(self) -> float | None: ...  # oldest pending item (s), None if none
    def before_cut(self) -> dict[str, Any] | None: ...  # append the legs; a report


def cut_batch(
    r: Any,
    policy: WindowPolicy,
    cursor: tuple[int, int],
    *,
    now: float | None = None,
    hook: CutHook | None = None,
    max_batch: int = MAX_BATCH,
    max_batches: int = MAX_GROUP,
) -> dict[str, Any] | None:
    """Cut the next batch of `policy.chain_id` from on-chain `cursor` (index, head), if the
    window says so and no batch is in flight. Returns the new batch JSON or None.

    A batch holds at most `max_batch` legs (a circuit capacity, the operator's setting).
    With more than one maximum batch pending, up to `max_batches` consecutive batches are
    cut at once (`plan_group`), each its own document whose `group` lists all their
    numbers; the first is returned and the lock holds its number. They are proven
    separately and submitted together (`settleMany`).

    The lock is taken with SET NX before anything is written: two tickers racing here cut
    one batch. The range's legs are copied into the batch document, so the proof and the
    transaction are built from exactly what was cut. With a `hook`, its legs are appended
    once the lock is held and the batch takes them (its report goes to `netting`).
    """
    chain = policy.chain_id
    now = time.time() if now is None else now
    index, head = cursor
    if r.exists(Keys.lock(chain)):
        return None
    log_next = int(r.get(Keys.log_next(chain)) or 0)
    hook_at = hook.pending_since() if hook is not None else None
    if log_next <= index and hook_at is None:
        return None
    at = oldest_pending_at(r, chain, index) if log_next > index else None
    if hook_at is not None:
        at = hook_at if at is None else min(at, hook_at)
    extra = 1 if hook_at is not None else 0
    plan = plan_cut(policy, index, max(log_next, index) + extra, now - at if at is not None else 0.0, max_batch=max_batch)
    if plan is None:
        return None
    n = int(r.incr(Keys.seq(chain)))
    if not r.set(Keys.lock(chain), str(n), nx=True):
        return None  # a racing ticker won; batch number n stays unused
    report = None
    if hook is not None:
        report = hook.before_cut()
        log_next = int(r.get(Keys.log_next(chain)) or 0)
        plan = CutPlan(plan.start, min(log_next, plan.start + max_batch))
        if plan.count <= 0:  # the flows netted to nothing: no leg to settle
            r.delete(Keys.lock(chain))
            return None
    # A backlog beyond one maximum batch: several consecutive batches, one group.
    plans = plan_group(plan.start, max(log_next, plan.end), max_batch=max_batch, max_batches=max_batches)
    numbers = [n]
    if len(plans) > 1:  # numbers need not be consecutive: the group lists them
        last = int(r.incrby(Keys.seq(chain), len(plans) - 1))
        numbers += list(range(last - len(plans) + 2, last + 1))
    raw = r.hmget(Keys.log_legs(chain), [str(i) for i in range(plans[0].start, plans[-1].end)])
    if any(x is None for x in raw):
        # A gap would make the hash chain diverge from the receipts: refuse, loudly.
        r.delete(Keys.lock(chain))
        raise RuntimeError(f"chain {chain}: order log has a gap in [{plans[0].start}, {plans[-1].end})")
    docs: list[dict[str, Any]] = []
    for number, part in zip(numbers, plans, strict=True):
        legs = [json.loads(x) for x in raw[part.start - plans[0].start : part.end - plans[0].start]]
        new_head = Batch(chain, part.start, head, tuple(leg_from_json(x) for x in legs)).new_head
        doc: dict[str, Any] = {
            "chainId": chain,
            "number": number,
            "start": part.start,
            "count": part.count,
            "oldHead": str(head),
            "newHead": str(new_head),
            "legs": legs,
            "state": BatchState.CUT,
            "cutAt": now,
            "oldestWait": round(now - at, 3) if at is not None else 0.0,
            "history": [{"state": BatchState.CUT, "at": now}],
        }
        if len(plans) > 1:
            doc["group"] = numbers
        docs.append(doc)
        head = new_head
    if report is not None:
        # On the batch that holds the POOL legs (appended last, so the group's last member).
        first = min((int(x["index"]) for x in report.get("poolLegs", [])), default=None)
        docs[next((k for k, d in enumerate(docs) if first is not None and d["start"] <= first < d["start"] + d["count"]), 0)]["netting"] = report
    with r.pipeline(transaction=True) as p:  # every member or none
        for doc in docs:
            save_batch(p, doc)
        p.execute()
    return docs[0]


def chain_status(r: Any, chain: int, *, recent: int = 5) -> dict[str, Any]:
    """What an operator watches per chain (for /metrics or a dashboard): backlog, the batch
    in flight, the last batches with their proof time, gas and state, the reconciliation."""
    log_next = int(r.get(Keys.log_next(chain)) or 0)
    applied = int(r.get(Keys.applied(chain)) or 0)
    seq = int(r.get(Keys.seq(chain)) or 0)
    batches = []
    for n in range(seq, max(0, seq - recent), -1):
        b = load_batch(r, chain, n)
        if b is not None:
            row = {k: b.get(k) for k in ("number", "start", "count", "state", "capacity", "proofSeconds", "txHash", "block", "gasUsed", "reorgs", "group")}
            # Netting (settlement/rebalance.py): the batch's ratio and its POOL legs as executed.
            row["nettingRatio"] = (b.get("netting") or {}).get("ratio")
            row["poolTrades"] = [{k: t[k] for k in ("pool", "tokenIn", "amountIn", "tokenOut", "amountOut", "ok")} for t in b.get("poolTrades", [])]
            batches.append(row)
    lock = r.get(Keys.lock(chain))
    recon = r.get(Keys.recon(chain))
    return {
        "chainId": chain,
        "logLength": log_next,
        "settled": applied,
        "backlog": log_next - applied,
        "inFlight": _s(lock) if lock is not None else None,
        "openBatches": sorted(int(x) for x in r.smembers(Keys.open(chain))),
        "pendingConfirms": int(r.scard(Keys.confirms(chain))),
        "batches": batches,
        "reconcile": json.loads(recon) if recon else None,
    }
