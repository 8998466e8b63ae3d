"""CPU priorities of the stack's services: niced ones stay niced against other sessions
(Linux autogroup scheduling), the confirmation path asks for short slices, the prover
runs on what is left (scripts/sched.py)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import pytest

SCHED = (
    "import json, os; from scripts.sched import slice_ns;"
    "print(json.dumps({'nice': os.nice(0), 'policy': os.sched_getscheduler(0), 'slice': slice_ns(),"
    " 'autogroup': open('/proc/self/autogroup').read().split()[-1] if os.path.exists('/proc/self/autogroup') else None}))"
)


def _kernel_has_custom_slices() -> bool:
    major, minor = (int(x) for x in os.uname().release.split(".")[:2])
    return sys.platform == "linux" and (major, minor) >= (6, 12)


def _service_report(tmp_path: Path, **flags: Any) -> dict:
    import json

    from scripts.stack import Service

    svc = Service("probe", [sys.executable, "-c", SCHED], **flags)  # started as the stack starts every service
    svc.start(tmp_path)
    assert svc.proc is not None
    assert svc.proc.wait(30) == 0, (tmp_path / "probe.log").read_text()
    return json.loads((tmp_path / "probe.log").read_text().splitlines()[-1])


def test_a_niced_service_in_its_own_session_is_niced_as_a_group(tmp_path: Path) -> None:
    base = os.nice(0)
    got = _service_report(tmp_path, nice=7)
    assert got["nice"] == min(base + 7, 19)
    if got["autogroup"] is None:
        pytest.skip("no autogroup scheduling on this system: the process's nice is what applies")
    # "/autogroup-N nice K": the session's scheduling group is niced too.
    assert got["autogroup"] == "7", got


def test_the_api_service_asks_for_a_short_slice_and_keeps_its_priority(tmp_path: Path) -> None:
    from scripts.sched import LATENCY_SLICE_NS

    got = _service_report(tmp_path, latency=True)
    assert got["nice"] == os.nice(0)
    assert got["policy"] == os.SCHED_OTHER
    if not _kernel_has_custom_slices():
        pytest.skip(f"Linux {os.uname().release} has no per-task slices (6.12+): the default applies")
    assert got["slice"] == LATENCY_SLICE_NS


def test_the_prover_service_runs_only_on_cpu_nobody_else_wants(tmp_path: Path) -> None:
    got = _service_report(tmp_path, background=True)
    assert got["nice"] == 19
    assert got["policy"] == os.SCHED_IDLE
    if got["autogroup"] is not None:
        assert got["autogroup"] == "19"  # its session's group too
    # No short slice: it gives way, it does not cut in.
    from scripts.sched import LATENCY_SLICE_NS

    assert got["slice"] != LATENCY_SLICE_NS


def test_embedded_redis_runs_with_a_short_slice(tmp_path: Path) -> None:
    from scripts.redis_server import EmbeddedRedis
    from scripts.sched import LATENCY_SLICE_NS, slice_ns

    if not _kernel_has_custom_slices():
        pytest.skip(f"Linux {os.uname().release} has no per-task slices (6.12+)")
    server = EmbeddedRedis(tmp_path / "redis")
    server.start()
    try:
        assert server.proc is not None
        assert slice_ns(server.proc.pid) == LATENCY_SLICE_NS
    finally:
        server.stop()
