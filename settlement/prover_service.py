"""The prover service: a cut batch in, a Groth16 proof out, and the measured speed.

Keys come from `groth16.load_or_setup` (cached on disk by circuit digest, the same cache
`scripts/devnet/deploy_settlement.py` generated the on-chain verifiers from) and are kept
in the process, so a worker pays the key load once per capacity. Every proof's wall time
is folded into a moving average per capacity in Redis; `measured_policy` gives window
policies and ETAs the measured speed instead of a guess.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import time
from typing import Any

from redis.exceptions import WatchError

from settlement.batching import BatchState, Keys, leg_from_json
from settlement.prover_gate import Held, ProverGate
from settlement.window import WindowPolicy
from settlement.zk import groth16
from settlement.zk.batch import Batch, batch_r1cs, build_batch_witness, capacity_for

__all__ = ["ProofResult", "measured_policy", "measured_proof_seconds", "prove_batch", "warm_keys"]

log = logging.getLogger("crossbook.prover")

_keys: dict[int, tuple[groth16.ProvingKey, groth16.VerifyingKey]] = {}
# Weight of the newest measurement: a few proofs move the average, one outlier does not.
EWMA_ALPHA = 0.3


@dataclasses.dataclass(frozen=True, slots=True)
class ProofResult:
    capacity: int
    words: tuple[int, ...]  # Proof.to_evm_words()
    seconds: float  # proving time, without the time the gate held it
    held_seconds: float = 0.0  # paused while the API was busy (settlement/prover_gate.py)


def _keys_for(capacity: int) -> tuple[groth16.ProvingKey, groth16.VerifyingKey]:
    if capacity not in _keys:
        t0 = time.monotonic()
        _keys[capacity] = groth16.load_or_setup(batch_r1cs(capacity))
        log.info("capacity %d: R1CS and keys loaded in %.2fs", capacity, time.monotonic() - t0)
    return _keys[capacity]


def warm_keys(capacities: tuple[int, ...] = (16,)) -> None:
    """Load (or make) keys ahead of the first batch, e.g. when a worker starts."""
    for c in capacities:
        _keys_for(c)


def batch_of(doc: dict[str, Any]) -> Batch:
    return Batch(
        chain_id=int(doc["chainId"]),
        start_index=int(doc["start"]),
        old_head=int(doc["oldHead"]),
        legs=tuple(leg_from_json(x) for x in doc["legs"]),
    )


def prove_batch(doc: dict[str, Any], *, processes: int = 2, gate: ProverGate | None = None) -> ProofResult:
    """Prove the batch document `doc` (as `batching.cut_batch` wrote it). Pure CPU; with
    a `gate`, it pauses while the API is busy."""
    batch = batch_of(doc)
    if str(batch.new_head) != doc["newHead"]:
        raise ValueError(f"batch {doc['number']}: legs do not fold to the recorded new head")
    # Keys and the R1CS are loaded once per process and not counted: the measured time is
    # what one more batch costs a warm prover, which is what ETAs need.
    pk, _vk = _keys_for(capacity_for(batch.count))
    t0 = time.monotonic()
    with gate.proof() if gate is not None else contextlib.nullcontext(Held()) as held:
        bw = build_batch_witness(batch)
        proof = groth16.prove(pk, bw.r1cs, bw.witness, processes=processes)
    secs = time.monotonic() - t0
    return ProofResult(bw.capacity, tuple(proof.to_evm_words()), max(secs - held.seconds, 0.0), held.seconds)


def record(r: Any, doc: dict[str, Any], result: ProofResult) -> dict[str, Any]:
    """Store the proof in the batch document (unless another prover got there first) and
    fold the time into the capacity's average. Returns the stored document."""
    key = Keys.batch(doc["chainId"], doc["number"])
    with r.pipeline() as p:
        while True:
            try:
                p.watch(key)
                cur = json.loads(p.get(key))
                if cur["state"] != BatchState.CUT:
                    p.unwatch()
                    return dict(cur)
                now = time.time()
                cur.update(
                    state=BatchState.PROVED,
                    capacity=result.capacity,
                    proof=[str(w) for w in result.words],
                    proofSeconds=round(result.seconds, 3),
                    proofHeldSeconds=round(result.held_seconds, 3),
                    provedAt=now,
                )
                cur["history"].append({"state": BatchState.PROVED, "at": now})
                p.multi()
                p.set(key, json.dumps(cur, separators=(",", ":")))
                p.execute()
                break
            except WatchError:  # someone else wrote the batch meanwhile: read again
                continue
    _fold_time(r, result.capacity, result.seconds)
    return dict(cur)


def _fold_time(r: Any, capacity: int, seconds: float) -> None:
    key = Keys.prooftime(capacity)
    old = r.get(key)
    new = seconds if old is None else (1 - EWMA_ALPHA) * float(old) + EWMA_ALPHA * seconds
    r.set(key, f"{new:.4f}")


def measured_proof_seconds(r: Any, capacity: int) -> float | None:
    v = r.get(Keys.prooftime(capacity))
    return float(v) if v is not None else None


def measured_policy(r: Any, policy: WindowPolicy) -> WindowPolicy:
    """`policy` with the measured proof time of the capacity its target batch needs."""
    cap = capacity_for(min(max(policy.target_batch, 1), 64))
    secs = measured_proof_seconds(r, cap)
    return policy if secs is None else dataclasses.replace(policy, proof_seconds=secs)
