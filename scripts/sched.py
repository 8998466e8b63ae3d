"""CPU scheduling for the stack's processes: the confirmation path first, proofs last.

On a small machine the prover is a CPU sink: with a backlog of batches it takes every
cycle it is given, beside the API and Redis, whose confirmations wait on each other's
wake-ups (the API sends the ledger script, Redis runs it and fsyncs, the API reads the
reply). Linux's fair scheduler lets the task on a CPU finish its time slice (~1.4 ms on
this 2-core machine, more with more cores) before a task that just woke runs, and each
service is a scheduling group of its own (a session: autogroup), so a niced or even
`SCHED_IDLE` prover still holds a CPU for that slice against the API or Redis waking on
it. Seen during `crossbook bench api`'s swap load (reading /proc/PID/schedstat, outside
the benchmark): Redis was runnable but waiting for a CPU for most of the load, and
swaps' median confirmation was several times longer in the seconds a proof ran than in
those it did not.

Two kernel features fix the order without any privilege:

- `latency_critical()`: a short time slice (`sched_setattr`'s `sched_runtime` for a normal
  task, Linux 6.12 and later). A waking task whose slice is shorter than the running
  one's preempts it at once (EEVDF's `PREEMPT_SHORT`), also across groups, as the
  group takes its tasks' shortest slice. Its share of the CPU does not change.
- `background()`: `SCHED_IDLE` and the lowest nice, for the process's group too.

Both are best effort: another OS, or an older kernel, runs the processes as before.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import platform
import struct

__all__ = ["LATENCY_SLICE_NS", "background", "latency_critical", "lower_priority", "slice_ns"]

# The shortest slice the kernel accepts (0.1 ms): a request's work on the API is longer,
# so the API still runs its requests through; it only gives way sooner to a wake-up.
LATENCY_SLICE_NS = 100_000

_SYSCALLS = {"x86_64": (314, 315), "aarch64": (274, 275)}  # sched_setattr, sched_getattr
_ATTR = struct.Struct("IIQiIQQQII")  # struct sched_attr, SCHED_ATTR_SIZE_VER1 (56 bytes)


def _syscall(nr: int, *args: object) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.syscall(nr, *args) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def _syscall_numbers() -> tuple[int, int]:
    """(sched_setattr, sched_getattr) on this machine: Linux only."""
    nrs = _SYSCALLS.get(platform.machine())
    if nrs is None or platform.system() != "Linux":
        raise OSError(f"no sched_setattr/sched_getattr known on {platform.system()} {platform.machine()}")
    return nrs


def _get_attr(tid: int) -> tuple[int, ...]:
    buf = ctypes.create_string_buffer(_ATTR.size)
    _syscall(_syscall_numbers()[1], ctypes.c_int(tid), buf, ctypes.c_uint(_ATTR.size), ctypes.c_uint(0))
    return _ATTR.unpack(buf.raw)


def slice_ns(tid: int = 0) -> int | None:
    """The time slice the kernel gives `tid` (0: this thread), in ns: the one it asked for,
    or the default; None when the kernel cannot say."""
    try:
        return _get_attr(tid)[5]
    except OSError:
        return None


def latency_critical(tid: int = 0, slice_ns: int = LATENCY_SLICE_NS) -> bool:
    """Ask for a short time slice for `tid` (0: this thread; inherited by what it starts).
    Keeps its policy and nice. True if the kernel took it."""
    try:
        _size, policy, _flags, nice, prio, *_ = _get_attr(tid)
        attr = _ATTR.pack(_ATTR.size, policy, 0, nice, prio, slice_ns, 0, 0, 0, 0)
        _syscall(_syscall_numbers()[0], ctypes.c_int(tid), ctypes.c_char_p(attr), ctypes.c_uint(0))
    except OSError:
        return False  # not Linux, or before 6.12 (a normal task's sched_runtime must be 0: EINVAL)
    return True


def background() -> None:
    """Run this process (and what it starts) on as little CPU as others leave it: the
    lowest nice, for its session's group too, and `SCHED_IDLE`."""
    lower_priority(19)
    with contextlib.suppress(AttributeError, OSError):
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))


def lower_priority(nice: int) -> None:
    """Run this process (and what it forks) `nice` lower, also against other sessions.

    Each service starts its own session (so that stopping it stops its children), and
    on Linux with autogroup scheduling (`kernel.sched_autogroup_enabled`, on by default)
    every session is a scheduling group of its own: the CPU is shared fairly between the
    groups first, and a process's nice value only counts inside its group. A niced
    prover in its own session then took as much CPU as the API (measured: a swap's
    `ledger` step averaged 51 ms under 200 swaps/s, mostly waiting for the event loop).
    The group's own nice value (`/proc/self/autogroup`) makes the nice count between
    sessions too."""
    niceness = os.nice(nice)  # capped at 19
    try:
        with open("/proc/self/autogroup", "w") as f:
            f.write(str(niceness))
    except OSError:
        pass  # no autogroups (another OS, or autogroup off): the process's nice applies
