"""How long the API's event loop is kept from serving: its lag, and the collector's pauses.

Every request of the API waits behind whatever the single event loop is doing, so a
latency tail is either the loop being busy (a plan rebuild, a garbage collection, a
burst of work) or the process not getting a CPU, or a request waiting on Redis. These
two histograms tell the first two apart from the third, from /metrics:

- `crossbook_event_loop_lag_seconds`: how late a 10 ms timer fires (the loop was busy or
  the process was not scheduled for that long);
- `crossbook_gc_pause_seconds{generation}`: each collection's duration.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
from typing import Any

from prometheus_client import Histogram

__all__ = ["LoopHealth"]

_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
LAG = Histogram("crossbook_event_loop_lag_seconds", "How late a 10 ms timer on the API's event loop fires", buckets=_BUCKETS)
GC_PAUSE = Histogram("crossbook_gc_pause_seconds", "Garbage collection pauses of the API process", ["generation"], buckets=_BUCKETS)
_GC = {g: GC_PAUSE.labels(str(g)) for g in range(3)}

PERIOD = 0.01


class LoopHealth:
    def __init__(self) -> None:
        self._task: asyncio.Task[None] | None = None
        self._gc_started = 0.0

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._watch())
        gc.callbacks.append(self._on_gc)

    async def stop(self) -> None:
        with contextlib.suppress(ValueError):
            gc.callbacks.remove(self._on_gc)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _watch(self) -> None:
        while True:
            t = time.perf_counter()
            await asyncio.sleep(PERIOD)
            LAG.observe(max(time.perf_counter() - t - PERIOD, 0.0))

    def _on_gc(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._gc_started = time.perf_counter()
        else:
            _GC[info["generation"]].observe(time.perf_counter() - self._gc_started)
