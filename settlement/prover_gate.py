"""Proofs give way to a busy API: the prover pauses while traders keep the API busy.

On a machine the prover shares with the API (the devnet's stack: two cores), a proof
takes both cores for seconds. It runs `SCHED_IDLE` (`scripts/sched.py`), but the
scheduler does not make that free: with a proof running, the API, Redis and the load's
clients wait for a CPU on wake-ups. Measured on 2026-11-25 with `python -m bench.api
--quote-seconds 4` on a slow hour of this machine: 200 swaps/s had a p99 of 246 ms with
the prover, 25 ms with the prover left out of the stack by hand, and 246 ms again with
two `SCHED_IDLE` busy loops at nice 19 in its place (so it is the CPU, not the prover's
other work).

So a proof pauses while the API is busy, and resumes when it has been quiet for a
moment. A confirmation is what a trader waits for; a proof only moves the trust window,
and one paused for a burst is proven right after it. Each proof is held at most
`max_hold_seconds` in all, so settlement keeps moving under any load.

- Each API process publishes its rate of quote and swap requests to a Redis hash every
  half second (`app/api/load.py`); `api_request_rate` sums the fresh entries.
- `ProverGate` samples it in a thread of the prover and sets a flag in shared memory,
  which the forked helper of a proof sees too.
- The proving code calls `settlement.zk.msm.pause_point()` between its steps (each MSM
  round, each proving stage); the gate installs `wait` there, which sleeps while the
  flag is set.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import mmap
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from settlement.zk import msm

__all__ = ["API_LOAD_KEY", "FRESH_SECONDS", "Held", "ProverGate", "api_request_rate"]

log = logging.getLogger("crossbook.prover")

# Hash: API instance -> "<requests per second> <unix time>".
API_LOAD_KEY = "crossbook:load:api"
# An entry older than this is from an API that stopped publishing (stopped or killed).
FRESH_SECONDS = 2.0


def api_request_rate(r: Any, now: float | None = None) -> float:
    """Requests per second over every API process that published within FRESH_SECONDS."""
    now = time.time() if now is None else now
    total = 0.0
    for raw in r.hgetall(API_LOAD_KEY).values():
        try:
            rate, at = (float(x) for x in raw.split())
        except ValueError:
            continue
        if now - at <= FRESH_SECONDS:
            total += rate
    return total


@dataclasses.dataclass(slots=True)
class Held:
    """How long the gate held the proof (filled in when the proof's block ends)."""

    seconds: float = 0.0


class ProverGate:
    """Holds proofs while `read_rate()` is at least `busy_rate`, until it has stayed below
    for `quiet_seconds`; each proof at most `max_hold_seconds` in all. `busy_rate` 0
    never holds."""

    def __init__(
        self,
        read_rate: Callable[[], float],
        *,
        busy_rate: float,
        quiet_seconds: float = 1.0,
        max_hold_seconds: float = 120.0,
        poll_seconds: float = 0.25,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.read_rate = read_rate
        self.busy_rate = busy_rate
        self.quiet_seconds = quiet_seconds
        self.max_hold_seconds = max_hold_seconds
        self.poll_seconds = poll_seconds
        self.clock = clock
        self._flag = mmap.mmap(-1, 1)  # anonymous and shared: a forked helper reads the same byte
        self._busy_at = float("-inf")
        self._active = False
        self._held = 0.0
        self._last: float | None = None
        self._rate = 0.0
        self._lock = threading.Lock()  # `step` runs in the sampler thread and in `proof`
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def holding(self) -> bool:
        return self._flag[0] == 1

    def step(self, now: float | None = None) -> bool:
        """One sample of the API's rate; returns whether proofs are held now."""
        with self._lock:
            return self._step(self.clock() if now is None else now)

    def _step(self, now: float) -> bool:
        if self.holding and self._last is not None:
            self._held += now - self._last
        self._last = now
        if self._active and self.busy_rate > 0:  # between proofs there is nothing to hold
            try:
                self._rate = self.read_rate()
            except Exception:  # Redis unreachable: nothing says the API is busy
                self._rate = 0.0
            if self._rate >= self.busy_rate:
                self._busy_at = now
        hold = self._active and now - self._busy_at < self.quiet_seconds and self._held < self.max_hold_seconds
        if hold != self.holding:
            self._flag[0] = int(hold)
            if hold:
                log.info("proof held: the API serves %.0f requests/s", self._rate, extra={"apiRequestsPerSecond": round(self._rate)})
            else:
                log.info("proof resumed after %.1fs held", self._held, extra={"heldSeconds": round(self._held, 2)})
        return hold

    @contextlib.contextmanager
    def proof(self) -> Iterator[Held]:
        """The block proves one batch: the gate may hold it. Installs `wait` as the
        proving code's pause point for the block."""
        held = Held()
        self._active, self._held, self._last = True, 0.0, self.clock()
        previous = msm.set_pause_hook(self.wait)
        self.step()
        try:
            yield held
        finally:
            msm.set_pause_hook(previous)
            self._active = False
            self.step()
            held.seconds = self._held

    def wait(self) -> None:
        """Sleep while the gate holds (in the prover or its forked helper). Bounded by
        `max_hold_seconds` here too: a helper whose parent died still finishes."""
        deadline = time.monotonic() + self.max_hold_seconds
        while self._flag[0] == 1 and time.monotonic() < deadline:
            time.sleep(0.02)

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="prover-gate", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self._flag[0] = 0

    def _run(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            self.step()
