"""The benchmark's view of the machine: CPU shares by kind, the disk's fsync time, and a
process tree's CPU."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from bench.machine import CpuTimes, busy, disk_watch, fsync_probe, tree_cpu_seconds


def test_cpu_shares_add_up_to_the_whole_machine() -> None:
    before = CpuTimes()
    assert set(before.shares_since(before).values()) == {0.0}  # an empty interval
    t = time.process_time() + 0.2
    while time.process_time() < t:  # some CPU of our own, so the interval is not empty
        pass
    after = CpuTimes()
    shares = after.shares_since(before)
    assert set(shares) == {"user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal"}
    assert abs(sum(shares.values()) - 100) < 1
    assert shares["user"] + shares["system"] + shares["nice"] > 0


def test_fsync_probe_leaves_nothing_behind(tmp_path: Path) -> None:
    result = fsync_probe(tmp_path, n=20)
    assert result["count"] == 20
    assert 0 < result["p50Ms"] <= result["p99Ms"] <= result["maxMs"]
    assert list(tmp_path.iterdir()) == []


def test_disk_watch_samples_while_the_block_runs(tmp_path: Path) -> None:
    with disk_watch(tmp_path, interval=0.02) as syncs:
        assert syncs == {}  # filled in when the block ends
        time.sleep(0.4)
    assert syncs["count"] >= 5
    assert 0 < syncs["p50Ms"] <= syncs["p99Ms"] <= syncs["maxMs"]
    assert list(tmp_path.iterdir()) == []


def test_a_workers_children_count_as_the_worker() -> None:
    # A parent that sleeps while its child burns ~0.5 s of CPU: the tree's CPU is the
    # child's, the parent's own almost nothing.
    code = (
        "import subprocess, sys; "
        "c = subprocess.Popen([sys.executable, '-c', 'import time\\nt = time.process_time() + 0.5\\nwhile time.process_time() < t: pass\\ntime.sleep(30)']); "
        "c.wait()"
    )
    parent = subprocess.Popen([sys.executable, "-c", code])
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            tree = tree_cpu_seconds({"worker": parent.pid})["worker"]
            if tree >= 0.5:
                break
            time.sleep(0.1)
        assert tree >= 0.5
        own = Path(f"/proc/{parent.pid}/stat").read_text().rsplit(")", 1)[1].split()
        assert (int(own[11]) + int(own[12])) / os.sysconf("SC_CLK_TCK") < 0.45
    finally:
        subprocess.run(["pkill", "-P", str(parent.pid)], check=False)
        parent.kill()
        parent.wait()


def test_busy_loops_run_in_sessions_of_their_own_and_end_with_the_block() -> None:
    with busy(2) as pids:
        assert len(pids) == 2
        time.sleep(0.5)
        for pid in pids:
            assert os.getsid(pid) == pid  # its own session: its own autogroup
            assert tree_cpu_seconds({"loop": pid})["loop"] > 0.1
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists()


def test_children_that_ended_still_count() -> None:
    # The parent runs a child that burns ~0.3 s of CPU and waits for it (as a prover's
    # pool ends after each proof): the child's CPU stays in the parent's tree.
    code = (
        "import subprocess, sys, time; "
        "subprocess.run([sys.executable, '-c', 'import time\\nt = time.process_time() + 0.3\\nwhile time.process_time() < t: pass']); "
        "print('done', flush=True); time.sleep(30)"
    )
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None and parent.stdout.readline().strip() == "done"
        assert tree_cpu_seconds({"worker": parent.pid})["worker"] >= 0.3
    finally:
        parent.kill()
        parent.wait()
