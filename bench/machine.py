"""What the machine itself did during a benchmark: where its CPU went (including what the
hypervisor took: `steal`), how long the disk takes to fsync, and each service's CPU.

The machines here are noisy: on one day the same code and load gave a swap p99 of 16 ms,
on another 250 ms. These figures, taken in the same run, say whether a slow run was the
code or the machine.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

__all__ = ["CpuTimes", "busy", "disk_watch", "fsync_probe", "process_cpu_seconds", "tree_cpu_seconds"]

_FIELDS = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")
_TICKS = os.sysconf("SC_CLK_TCK")


class CpuTimes:
    """The whole machine's CPU time by kind (the first line of /proc/stat)."""

    def __init__(self) -> None:
        first = Path("/proc/stat").read_text().split("\n", 1)[0].split()
        self.ticks = {name: int(v) for name, v in zip(_FIELDS, first[1:], strict=False)}

    def shares_since(self, earlier: CpuTimes) -> dict[str, float]:
        """Percent of all cores' time spent in each kind since `earlier` (`nice` is the
        niced services' user time: the prover, the settle worker, beat, the maker)."""
        d = {k: self.ticks.get(k, 0) - earlier.ticks.get(k, 0) for k in _FIELDS}
        total = sum(d.values())
        return {k: round(v * 100 / total, 1) if total else 0.0 for k, v in d.items()}


def _sync_once(fd: int, size: int) -> float:
    os.write(fd, b"x" * size)
    t = time.perf_counter()
    os.fdatasync(fd)
    return time.perf_counter() - t


def _summary(times: list[float]) -> dict[str, float]:
    times = sorted(times)
    if not times:
        return {"count": 0}
    return {
        "count": len(times),
        "p50Ms": round(times[len(times) // 2] * 1000, 3),
        "p99Ms": round(times[min(len(times) - 1, int(len(times) * 0.99))] * 1000, 3),
        "maxMs": round(times[-1] * 1000, 3),
    }


def fsync_probe(directory: Path, n: int = 100, size: int = 256) -> dict[str, float]:
    """Append `size` bytes and fdatasync, `n` times, in `directory` (the Redis data
    directory: the disk every confirmation's AOF write waits for). Milliseconds."""
    path = directory / ".fsync-probe"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        times = [_sync_once(fd, size) for _ in range(n)]
    finally:
        os.close(fd)
        path.unlink(missing_ok=True)
    return _summary(times)


@contextmanager
def disk_watch(directory: Path, interval: float = 0.05, size: int = 256) -> Iterator[dict[str, float]]:
    """While the block runs, append and fdatasync in `directory` every `interval` s from
    a thread; the dict it yields is filled with the p50/p99/max (ms) when the block ends.
    A confirmation waits for Redis's fsync on this disk: a slow swap tail beside a slow
    disk tail here is the disk's."""
    path = directory / ".fsync-watch"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    times: list[float] = []
    stop = threading.Event()

    def run() -> None:
        while not stop.wait(interval):
            times.append(_sync_once(fd, size))

    thread = threading.Thread(target=run, name="disk-watch", daemon=True)
    thread.start()
    result: dict[str, float] = {}
    try:
        yield result
    finally:
        stop.set()
        thread.join()
        os.close(fd)
        path.unlink(missing_ok=True)
        result.update(_summary(times))


def _children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            ppid = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        kids.setdefault(ppid, []).append(int(entry))
    return kids


def process_cpu_seconds(pid: int, *, reaped_children: bool = True) -> float:
    """User + system CPU seconds of a process (0 once it is gone), with those of the
    children it has reaped (a prover's pool processes that ended before this read;
    children still alive are read on their own) unless `reaped_children` is False."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return sum(int(f) for f in fields[11 : 15 if reaped_children else 13]) / _TICKS


def tree_cpu_seconds(roots: Mapping[str, int]) -> dict[str, float]:
    """CPU seconds (user + system) of each named process and its descendants, the live
    ones and those it has reaped (a Celery worker's pool processes count as the worker)."""
    kids = _children()
    out: dict[str, float] = {}
    for name, root in roots.items():
        total, todo = 0.0, [root]
        while todo:
            pid = todo.pop()
            total += process_cpu_seconds(pid)
            todo.extend(kids.get(pid, []))
        out[name] = total
    return out


@contextmanager
def busy(processes: int) -> Iterator[list[int]]:
    """`processes` busy loops, each in a session of its own (as another tenant's work
    would be: Linux's autogroup scheduling gives each session an equal share of the CPU
    before nice values count), for as long as the block runs. A fast machine then shows
    how much of it the goals need: one busy loop takes up to a core of two."""
    procs = [
        subprocess.Popen([sys.executable, "-c", "while True: pass"], start_new_session=True)
        for _ in range(processes)
    ]
    try:
        yield [p.pid for p in procs]
    finally:
        for p in procs:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
