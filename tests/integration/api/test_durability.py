"""kill -9 the API and then Redis mid-load: every order that got a receipt is in the
ledger at its log index, and the log has no gaps or duplicates."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from app.client import order_from_quote, sign_order, swap_body
from app.domain.eip712 import Domain
from scripts.devnet.devnet import Devnet
from scripts.redis_server import EmbeddedRedis
from tests.conftest import ApiProcess

pytestmark = pytest.mark.integration


async def _load(base: dict[str, str], m: Any, stop: asyncio.Event, receipts: list[dict[str, Any]], errors: list[int]) -> None:
    traders = m.traders[:3]
    sell, buy = m.chains[0], m.chains[2]

    async def worker(k: int) -> None:
        t = traders[k % len(traders)]
        n = 0
        async with httpx.AsyncClient(timeout=5) as c:
            while not stop.is_set():
                n += 1
                try:
                    q = await c.post(base["url"] + "/v1/quote", json={"sellChainId": sell.chain_id, "sellToken": "WETH", "buyChainId": buy.chain_id, "buyToken": "USDC", "taker": t.address, "sellAmount": str(10**14)})
                    if q.status_code != 200:
                        errors.append(q.status_code)
                        await asyncio.sleep(0.05)
                        continue
                    quote = q.json()
                    d = quote["eip712"]["domain"]
                    order = order_from_quote(quote, nonce=k * 1_000_000 + n)
                    sig = sign_order(order, Domain(chain_id=d["chainId"], verifying_contract=d["verifyingContract"]), t.private_key)
                    r = await c.post(base["url"] + "/v1/swap", json=swap_body(quote, order, sig))
                    if r.status_code == 200:
                        receipts.append(r.json())
                    else:
                        errors.append(r.status_code)
                except httpx.HTTPError:
                    errors.append(-1)
                    await asyncio.sleep(0.05)

    await asyncio.gather(*(worker(k) for k in range(8)))


async def test_kill_api_and_redis_mid_load(devnet: Devnet, tmp_path: Path) -> None:
    m = devnet.manifest
    store = EmbeddedRedis(tmp_path / "redis")
    store.start()
    api = ApiProcess(devnet.manifest_path, store.url, tmp_path)
    base = {"url": api.url}
    receipts: list[dict[str, Any]] = []
    errors: list[int] = []
    stop = asyncio.Event()
    load = asyncio.create_task(_load(base, m, stop, receipts, errors))

    async def progressed(since: int, timeout: float = 30.0) -> int:
        # Phases end on progress, not on a clock: a busy machine only makes them longer.
        deadline = asyncio.get_running_loop().time() + timeout
        while len(receipts) < since + 20 and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.1)
        return len(receipts)

    try:
        n1 = await progressed(0)
        os.killpg(api.proc.pid, signal.SIGKILL)
        api.proc.wait()
        api = ApiProcess(devnet.manifest_path, store.url, tmp_path)
        base["url"] = api.url
        n2 = await progressed(n1)
        store.kill()  # kill -9 Redis while swaps are in flight
        await asyncio.sleep(0.5)
        store.start()  # same port, same AOF
        n3 = await progressed(n2)
        stop.set()
        await asyncio.wait_for(load, 30)
    finally:
        stop.set()
        api.stop()
    assert n1 > 0 and n2 > n1 and n3 > n2, (n1, n2, n3, errors[-10:])
    assert 500 not in errors, errors

    r = redis.Redis.from_url(store.url)
    try:
        legs = {int(k): json.loads(v) for k, v in r.hgetall(f"log:{m.chains[0].chain_id}:legs").items()}
        assert sorted(legs) == list(range(len(legs)))  # gapless
        assert int(r.get(f"log:{m.chains[0].chain_id}:next")) == len(legs)
        owners = [leg["orderId"] for leg in legs.values()]
        assert len(set(owners)) == len(owners)  # each index belongs to one order, each order has one pull
        for rc in receipts:
            doc = json.loads(r.get("order:" + rc["orderId"]))
            assert doc["legs"][0]["logIndex"] == rc["log"]["index"]
            assert legs[rc["log"]["index"]]["orderId"] == rc["orderId"]
            assert doc["buyAmount"] == rc["buyAmount"]
    finally:
        store.stop()
