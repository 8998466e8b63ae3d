"""The quote store writes behind the reply, on a real Redis: what it promises and its bounds."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError

from app.services.quote_store import RedisQuoteStore
from scripts.devnet.ports import free_port
from scripts.redis_server import EmbeddedRedis

pytestmark = pytest.mark.integration


async def test_a_quote_is_in_redis_with_its_ttl_once_flushed(redis_url: str) -> None:
    r = aioredis.Redis.from_url(redis_url)
    store = RedisQuoteStore(r)
    try:
        await asyncio.gather(*(store.put(f"q{k}", {"k": k}, 30) for k in range(50)))
        await store.flush()
        assert [await store.get(f"q{k}") for k in range(50)] == [{"k": k} for k in range(50)]
        assert 0 < await r.ttl("quote:q7") <= 30
    finally:
        await r.aclose()


async def test_replies_do_not_wait_for_redis_but_the_queue_is_bounded(redis_server: EmbeddedRedis, redis_url: str) -> None:
    """With Redis stopped (SIGSTOP: it accepts nothing), puts return at once up to
    `max_pending` queued writes; beyond that a put waits for its own write. When Redis
    runs again, every queued quote is written."""
    r = aioredis.Redis.from_url(redis_url)
    await r.ping()  # the connection is open before Redis stops
    store = RedisQuoteStore(r, max_pending=3)
    assert redis_server.proc is not None
    os.kill(redis_server.proc.pid, signal.SIGSTOP)
    try:
        for k in range(4):  # one in flight, three queued
            await asyncio.wait_for(store.put(f"b{k}", {"k": k}, 30), 1)
        blocked = asyncio.ensure_future(store.put("b4", {"k": 4}, 30))
        await asyncio.sleep(0.5)
        assert not blocked.done()
    finally:
        os.kill(redis_server.proc.pid, signal.SIGCONT)
    await asyncio.wait_for(blocked, 10)
    await store.flush()
    try:
        assert [await store.get(f"b{k}") for k in range(5)] == [{"k": k} for k in range(5)]
    finally:
        await r.aclose()


async def test_after_a_failed_write_puts_wait_and_raise_until_redis_answers(tmp_path: Path) -> None:
    port = free_port()  # nothing listens here yet
    r = aioredis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=1)
    store = RedisQuoteStore(r)
    server: EmbeddedRedis | None = None
    try:
        await store.put("lost", {"k": 0}, 30)  # written behind: the caller does not see it fail
        await store.flush()
        with pytest.raises(RedisConnectionError):  # now the failure reaches the caller
            await store.put("refused", {"k": 1}, 30)
        server = EmbeddedRedis(port=port, data_dir=tmp_path)
        server.start()
        await store.put("back", {"k": 2}, 30)  # waits for its write, which succeeds
        assert await store.get("back") == {"k": 2}
        await store.put("behind", {"k": 3}, 30)  # and writes go behind replies again
        await store.flush()
        assert await store.get("behind") == {"k": 3}
    finally:
        await r.aclose()
        if server is not None:
            server.stop()
