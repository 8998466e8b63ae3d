"""The API benchmark reads the server's histograms between two /metrics snapshots."""

from __future__ import annotations

import os
import time
from pathlib import Path

from bench.api import _histogram, _measured, _swap_pricing


def _snapshot(counts: list[int], total: float, label: str = 'phase="ledger"') -> dict[str, float]:
    les = ["0.001", "0.01", "0.1", "+Inf"]
    out = {f'crossbook_swap_phase_seconds_bucket{{le="{le}",{label}}}': float(c) for le, c in zip(les, counts, strict=True)}
    out[f"crossbook_swap_phase_seconds_count{{{label}}}"] = float(counts[-1])
    out[f"crossbook_swap_phase_seconds_sum{{{label}}}"] = total
    return out


def test_histogram_between_snapshots() -> None:
    before = _snapshot([10, 10, 10, 10], 0.005)
    # 100 new observations: 50 under 1 ms, 45 under 10 ms, 4 under 100 ms, 1 beyond.
    after = _snapshot([60, 105, 109, 110], 0.005 + 0.5)
    h = _histogram(before, after, "crossbook_swap_phase_seconds", 'phase="ledger"')
    assert h == {"count": 100, "meanMs": 5.0, "p50AtMostMs": 1.0, "p90AtMostMs": 10.0, "p99AtMostMs": 100.0}


def test_histogram_tail_beyond_the_last_bucket_is_unknown() -> None:
    h = _histogram({}, _snapshot([0, 0, 90, 100], 5.0), "crossbook_swap_phase_seconds", 'phase="ledger"')
    assert h["p50AtMostMs"] == 100.0 and h["p99AtMostMs"] is None


def test_no_observations() -> None:
    snap = _snapshot([1, 1, 1, 1], 0.1)
    h = _histogram(snap, snap, "crossbook_swap_phase_seconds", 'phase="ledger"')
    assert h["count"] == 0 and h["meanMs"] is None


def test_swap_pricing_counter() -> None:
    m = {'crossbook_swap_pricing_total{how="reused"}': 7.0, 'crossbook_swap_pricing_total{how="repriced"}': 3.0, "other": 1.0}
    assert _swap_pricing(m) == {"reused": 7.0, "repriced": 3.0}


def test_cpu_per_request_divides_by_every_request_sent() -> None:
    """The CPU a process used during a load, over every request sent (warm-up included),
    not only the measured ones: here this very process burns CPU while 'sending' 200."""
    def load() -> dict[str, int]:
        t = time.process_time()
        while time.process_time() - t < 0.2:  # 0.2 s of this process's CPU
            pass
        return {"requests": 100, "sent": 200}

    doc = _measured(os.getpid(), load)
    # 0.2 s over 200 requests is 1 ms each (clock ticks are 10 ms: allow one either side).
    assert 0.9 <= doc["serverCpuMsPerRequest"] <= 1.15


def test_cpu_per_request_without_requests_is_unknown() -> None:
    assert _measured(os.getpid(), lambda: {"requests": 0, "sent": 0})["serverCpuMsPerRequest"] is None


def test_the_machine_beside_each_load(tmp_path: Path) -> None:
    def load() -> dict[str, int]:
        t = time.process_time() + 0.1
        while time.process_time() < t:
            pass
        return {"requests": 1, "sent": 1}

    doc = _measured(os.getpid(), load, {"bench": os.getpid()}, tmp_path)
    machine = doc["machine"]
    assert machine["diskFdatasync"]["count"] >= 1
    assert abs(sum(machine["cpuPercent"].values()) - 100) < 1
    assert set(machine["processPercentOfOneCore"]) == {"bench", "anvil", "loadGenerator"}
    assert machine["processPercentOfOneCore"]["bench"] > 0
    assert machine["otherPercentOfOneCore"] >= 0
