"""The API's request rate, as the prover reads it to give way (app/api/load.py,
settlement/prover_gate.py): real Redis, a real API process and HTTP client."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import redis
import redis.asyncio as aioredis

from app.api.load import LoadReporter
from settlement.prover_gate import API_LOAD_KEY, FRESH_SECONDS, api_request_rate


def test_the_rate_sums_every_fresh_api_and_skips_stale_or_garbled_entries(redis_url: str) -> None:
    r = redis.Redis.from_url(redis_url)
    now = time.time()
    r.hset(API_LOAD_KEY, mapping={
        "a:1": f"120.5 {now - 0.4}",
        "b:2": f"30 {now}",
        "gone:3": f"900 {now - FRESH_SECONDS - 1}",  # an API killed a while ago
        "odd:4": "busy",
    })
    assert api_request_rate(r, now) == 150.5
    r.delete(API_LOAD_KEY)
    assert api_request_rate(r) == 0.0


async def test_the_reporter_writes_while_requests_come_then_one_zero_then_nothing(redis_url: str) -> None:
    r = aioredis.Redis.from_url(redis_url)
    served = [0]
    rep = LoadReporter(r, lambda: served[0], period=0.1)

    async def requests_for(seconds: float) -> None:  # ~100 requests/s
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            served[0] += 1
            await asyncio.sleep(0.01)

    rep.start()
    try:
        await asyncio.sleep(0.25)
        assert await r.hget(API_LOAD_KEY, rep.instance) is None  # idle from the start: no writes
        await requests_for(0.35)
        rate, _ = (await r.hget(API_LOAD_KEY, rep.instance)).split()
        assert 20 < float(rate) < 200
        await asyncio.sleep(0.25)  # no more requests
        zero = await r.hget(API_LOAD_KEY, rep.instance)
        assert float(zero.split()[0]) == 0.0
        await asyncio.sleep(0.3)
        assert await r.hget(API_LOAD_KEY, rep.instance) == zero  # not written again
    finally:
        await rep.stop()
    assert await r.hget(API_LOAD_KEY, rep.instance) is None  # removed at shutdown
    await r.aclose()


def test_a_running_api_publishes_its_rate_of_quotes_and_swaps_only(api: Any, devnet: Any) -> None:
    r = redis.Redis.from_url(api.redis_url)
    m = devnet.manifest
    body = {"sellChainId": m.chains[0].chain_id, "sellToken": "WETH", "buyChainId": m.chains[1].chain_id,
            "buyToken": "USDC", "sellAmount": str(10**16), "taker": m.traders[0].address}
    with httpx.Client(base_url=api.url) as c:
        deadline = time.monotonic() + 1.2
        while time.monotonic() < deadline:
            assert c.post("/v1/quote", json=body).status_code == 200
        assert api_request_rate(r) > 20
        # Status reads, however many, are not trading load: the rate drops to 0.
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            assert c.get("/v1/chains").status_code == 200
    assert api_request_rate(r) == 0.0
