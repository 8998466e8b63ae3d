"""Settlement windows: when a chain's next batch is cut, and the ETAs that follow.

A batch is cut when `target_batch` legs are pending or the oldest pending leg has
waited `max_wait` seconds, whichever comes first. `max_wait` follows the chain: a few
blocks (a batch per block would waste the proof's fixed cost), at least 2 s and at most
12 s. Time to finality of a leg is then at most

    max_wait + proof_seconds + finality_depth × block_time

where `proof_seconds` is the prover's measured time for the batch capacity. Quotes and
order status show this ETA per chain; a cross-chain payout waits for its pull to settle
first (standard tier), so its ETA is the sum of both chains' ETAs.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["WindowPolicy", "policy_for"]


@dataclass(frozen=True, slots=True)
class WindowPolicy:
    chain_id: int
    block_time: float
    finality_depth: int
    target_batch: int
    max_wait: float
    proof_seconds: float

    @property
    def finality_seconds(self) -> float:
        return self.finality_depth * self.block_time

    @property
    def eta_seconds(self) -> float:
        """Upper bound from confirmation to a final, proven leg on this chain."""
        return self.max_wait + self.proof_seconds + self.finality_seconds

    def should_cut(self, pending: int, oldest_wait: float) -> bool:
        return pending >= self.target_batch or (pending > 0 and oldest_wait >= self.max_wait)

    def to_json(self) -> dict[str, float | int]:
        return {
            "targetBatch": self.target_batch,
            "maxWaitSeconds": round(self.max_wait, 3),
            "proofSeconds": round(self.proof_seconds, 3),
            "finalitySeconds": round(self.finality_seconds, 3),
            "etaSeconds": round(self.eta_seconds, 3),
        }


def policy_for(
    chain_id: int, block_time: float, finality_depth: int, *, target_batch: int = 32, proof_seconds: float = 3.0
) -> WindowPolicy:
    max_wait = min(12.0, max(2.0, 4 * block_time))
    return WindowPolicy(chain_id, block_time, finality_depth, target_batch, max_wait, proof_seconds)
