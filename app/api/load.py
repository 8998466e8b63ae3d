"""This API process's rate of quote and swap requests, published to Redis for the
prover: proofs give way while traders keep the API busy (settlement/prover_gate.py).

Only the two trading routes count (`fastlane.trading_requests`): they are what the
latency goals are about and what costs the API its CPU under load. Status reads do not:
a client following 60 open orders reads each once a second, a burst of cheap requests
that would otherwise hold proofs for as long as it follows them.

Every half second that saw such requests, the process writes "<requests per second>
<unix time>" under its own field of one hash (`API_LOAD_KEY`): one small write, beside
hundreds of orders a second under load. When they stop it writes one 0, then nothing:
an idle API writes nothing. The prover sums the fresh fields, so several API processes
add up, and a killed one stops counting once its entry is stale.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Callable
from typing import Any

from settlement.prover_gate import API_LOAD_KEY

__all__ = ["LoadReporter"]

log = logging.getLogger("crossbook.api")

PERIOD = 0.5


class LoadReporter:
    def __init__(self, redis: Any, count: Callable[[], int], period: float = PERIOD) -> None:
        self.redis = redis
        self.count = count
        self.period = period
        self.instance = f"{socket.gethostname()}:{os.getpid()}"
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._publish())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        with contextlib.suppress(Exception):  # Redis gone: the entry goes stale instead
            await self.redis.hdel(API_LOAD_KEY, self.instance)

    async def _publish(self) -> None:
        last_n, last_t, last_rate = self.count(), time.monotonic(), 0.0
        while True:
            await asyncio.sleep(self.period)
            n, t = self.count(), time.monotonic()
            rate = (n - last_n) / (t - last_t)
            last_n, last_t = n, t
            if rate == 0 and last_rate == 0:
                continue
            last_rate = rate
            try:
                await self.redis.hset(API_LOAD_KEY, self.instance, f"{rate:.1f} {time.time():.3f}")
            except Exception as e:  # never take the API down for this; the next write retries
                log.debug("load report not written: %s", e)
