"""Where issued quotes live until they expire: Redis, written behind the reply.

A quote is an offer, not state: nothing is reserved or owed until a swap confirms it,
and the confirmation, not the quote, is what must be durable before its reply (SPEC
5.4). So a quote's reply does not wait for Redis's fsync (`appendfsync always`: 4-9 ms
on this disk, and longer behind other clients' writes, which made it most of a quote's
latency). `put` queues the write and returns; the queued writes go out together, one
pipeline per round trip (group commit). A swap checks its quote from the issuing
process's memory (`QuoteService.stored`), so it never waits for that write either.

What a lost write costs: a quote issued just before Redis or the API died may be
unknown afterwards, and its swap is refused (`QUOTE_NOT_FOUND`): the trader quotes
again. Bounds: while a write has failed (Redis unreachable) and until one succeeds, and
whenever `max_pending` writes are queued (Redis slower than the quotes), `put` waits for
its own write, so errors reach the caller and the queue cannot grow without limit.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from prometheus_client import Counter

from app.json_codec import dumps, loads

__all__ = ["RedisQuoteStore"]

log = logging.getLogger("crossbook.quotes")


WRITE_FAILURES = Counter("crossbook_quote_store_failures_total", "Quote writes to Redis that failed")


def _retrieved(fut: asyncio.Future[None]) -> None:
    # A write-behind quote's future has no waiter: mark its error as seen (it is logged).
    if not fut.cancelled():
        fut.exception()


class RedisQuoteStore:
    def __init__(self, redis: Any, prefix: str = "quote:", *, max_pending: int = 1024) -> None:
        self.redis = redis
        self.prefix = prefix
        self.max_pending = max_pending
        self._queue: list[tuple[str, bytes, int, asyncio.Future[None]]] = []
        self._drain_task: asyncio.Task[None] | None = None  # writing while it runs
        self._failing = False  # the last write failed: puts wait for theirs until one succeeds

    async def put(self, quote_id: str, doc: dict[str, Any], ttl: int) -> None:
        """Queue the quote's write; wait for it only while writes fail or too many are
        queued (see the module's docstring)."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        fut.add_done_callback(_retrieved)
        self._queue.append((self.prefix + quote_id, dumps(doc), ttl, fut))
        if self._drain_task is None or self._drain_task.done():
            self._drain_task = asyncio.get_running_loop().create_task(self._drain())
        if self._failing or len(self._queue) > self.max_pending:
            await fut

    async def flush(self) -> None:
        """Wait until every queued write has been acknowledged (or failed): the drain
        task runs until the queue is empty."""
        if self._drain_task is not None:
            await asyncio.shield(self._drain_task)

    async def _drain(self) -> None:
        while self._queue:
            batch, self._queue = self._queue, []
            try:
                if len(batch) == 1:
                    key, value, ttl, _ = batch[0]
                    await self.redis.set(key, value, ex=ttl)
                else:
                    async with self.redis.pipeline(transaction=False) as pipe:
                        for key, value, ttl, _ in batch:
                            pipe.set(key, value, ex=ttl)
                        await pipe.execute()
            except Exception as e:  # every waiter gets the storage error
                self._failing = True
                WRITE_FAILURES.inc(len(batch))
                log.warning("quote writes failed", extra={"quotes": len(batch), "error": f"{type(e).__name__}: {e}"})
                for *_, fut in batch:
                    if not fut.done():
                        fut.set_exception(e)
            else:
                self._failing = False
                for *_, fut in batch:
                    if not fut.done():
                        fut.set_result(None)

    async def get(self, quote_id: str) -> dict[str, Any] | None:
        raw = await self.redis.get(self.prefix + quote_id)
        return loads(raw) if raw else None
