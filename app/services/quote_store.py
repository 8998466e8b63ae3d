"""Where issued quotes live until they expire: Redis, written by group commit.

Every quote is stored before its reply leaves (a swap may arrive at once, on any
connection). One SET per quote costs a Redis round trip of client CPU each; under load
many quotes are issued while one write is in flight, so the store queues them and the
next write sends them all in one pipeline. A quote's `put` returns once its own write is
acknowledged, so the guarantee is unchanged; a lone quote goes out at once.
"""

from __future__ import annotations

import asyncio
from typing import Any

from app.json_codec import dumps, loads

__all__ = ["RedisQuoteStore"]


class RedisQuoteStore:
    def __init__(self, redis: Any, prefix: str = "quote:") -> None:
        self.redis = redis
        self.prefix = prefix
        self._queue: list[tuple[str, bytes, int, asyncio.Future[None]]] = []
        self._writing = False

    async def put(self, quote_id: str, doc: dict[str, Any], ttl: int) -> None:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append((self.prefix + quote_id, dumps(doc), ttl, fut))
        if not self._writing:
            self._writing = True
            asyncio.get_running_loop().create_task(self._drain())
        await fut

    async def _drain(self) -> None:
        try:
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
                    for *_, fut in batch:
                        if not fut.done():
                            fut.set_exception(e)
                else:
                    for *_, fut in batch:
                        if not fut.done():
                            fut.set_result(None)
        finally:
            self._writing = False

    async def get(self, quote_id: str) -> dict[str, Any] | None:
        raw = await self.redis.get(self.prefix + quote_id)
        return loads(raw) if raw else None
