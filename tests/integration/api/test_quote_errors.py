"""Every bad quote request gets its documented code and status, never a 5xx; the rate
limit answers 429 with Retry-After; the order stream pushes status changes."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets

from app.client import CrossbookClient
from scripts.devnet.devnet import Devnet
from scripts.redis_server import EmbeddedRedis
from tests.conftest import ApiProcess

pytestmark = pytest.mark.integration


def _good(m: Any) -> dict[str, Any]:
    return {"sellChainId": m.chains[0].chain_id, "sellToken": "WETH", "buyChainId": m.chains[1].chain_id, "buyToken": "USDC", "sellAmount": str(10**18), "taker": m.traders[0].address}


@pytest.mark.parametrize(
    ("change", "status", "code"),
    [
        ({"sellChainId": 999}, 400, "UNKNOWN_CHAIN"),
        ({"buyToken": "NOPE"}, 400, "UNKNOWN_ASSET"),
        ({"buyToken": "0x" + "12" * 20}, 400, "UNKNOWN_ASSET"),
        ({"buyChainId": None, "buyToken": "WETH"}, 400, "SAME_ASSET"),
        ({"sellAmount": "0"}, 400, "AMOUNT_TOO_SMALL"),
        ({"sellAmount": "-1"}, 400, "INVALID_REQUEST"),
        ({"sellAmount": "1.5"}, 400, "INVALID_REQUEST"),
        ({"sellAmount": "1e18"}, 400, "INVALID_REQUEST"),
        ({"sellAmount": 10**18}, 400, "INVALID_REQUEST"),
        ({"sellAmount": str(2**128)}, 400, "AMOUNT_TOO_LARGE"),
        ({"buyAmount": "5"}, 400, "INVALID_REQUEST"),  # both amounts given
        ({"extra": 1}, 400, "INVALID_REQUEST"),
        ({"taker": "0x1234"}, 400, "INVALID_REQUEST"),
        ({"slippageBps": 20_000}, 400, "INVALID_REQUEST"),
        ({"sellAmount": str(10**30)}, 422, "INSUFFICIENT_LIQUIDITY"),
        ({"sellToken": "USDT", "buyToken": "WBTC", "sellAmount": str(1000 * 10**6)}, None, None),  # via a connector
    ],
)
def test_quote_errors(api: Any, devnet: Devnet, change: dict[str, Any], status: int | None, code: str | None) -> None:
    m = devnet.manifest
    body = _good(m)
    for k, v in change.items():
        if k == "buyChainId" and v is None:
            body["buyChainId"] = body["sellChainId"]
        else:
            body[k] = v
    r = httpx.post(api.url + "/v1/quote", json=body, timeout=10)
    if status is None:
        assert r.status_code == 200, r.text
        return
    assert r.status_code == status, r.text
    doc = r.json()
    assert doc["error"]["code"] == code and doc["requestId"] == r.headers["x-request-id"]


def test_malformed_json_and_oversized_bodies(api: Any) -> None:
    r = httpx.post(api.url + "/v1/quote", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "INVALID_REQUEST"
    r = httpx.post(api.url + "/v1/quote", content=b"x" * (70 * 1024), headers={"content-type": "application/json"})
    assert r.status_code == 413 and r.json()["error"]["code"] == "PAYLOAD_TOO_LARGE"
    assert httpx.get(api.url + "/v1/nothing").json()["error"]["code"] == "NOT_FOUND"


@pytest.fixture
def limited_api(devnet: Devnet, redis_server: EmbeddedRedis, tmp_path: Path) -> Iterator[ApiProcess]:
    proc = ApiProcess(devnet.manifest_path, redis_server.url, tmp_path, CROSSBOOK_RATE_LIMIT_PER_SECOND="0.2", CROSSBOOK_RATE_LIMIT_BURST="5")
    try:
        yield proc
    finally:
        proc.stop()


def test_rate_limit_is_429_with_retry_after(limited_api: ApiProcess) -> None:
    codes = [httpx.get(limited_api.url + "/v1/chains").status_code for _ in range(12)]
    assert codes[:5] == [200] * 5 and 429 in codes
    r = httpx.get(limited_api.url + "/v1/chains")
    assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
    assert r.json()["error"]["code"] == "RATE_LIMITED"
    assert httpx.get(limited_api.url + "/healthz").status_code == 200  # probes are never limited


async def test_order_stream_pushes_status_changes(api: Any, devnet: Devnet) -> None:
    m = devnet.manifest
    trader = m.traders[4]
    ws_url = api.url.replace("http://", "ws://") + f"/v1/ws/orders?trader={trader.address}"
    async with websockets.connect(ws_url) as ws:
        await asyncio.sleep(0.2)  # subscribed
        c = CrossbookClient(api.url)
        q = c.quote(m.chains[2].chain_id, "WETH", m.chains[2].chain_id, "USDC", taker=trader.address, sell_amount=10**15)
        receipt = await asyncio.to_thread(c.swap, q, trader.private_key)
        msg = json.loads(await asyncio.wait_for(ws.recv(), 10))
        assert msg["orderId"] == receipt["orderId"] and msg["state"] == "confirmed"
        assert msg["status"]["legs"][0]["logIndex"] == receipt["log"]["index"]
    # A socket for no valid trader is refused at the handshake (403) or closed at once.
    with pytest.raises((websockets.InvalidStatus, websockets.ConnectionClosed)):
        async with websockets.connect(api.url.replace("http://", "ws://") + "/v1/ws/orders?trader=nope") as bad:
            await asyncio.wait_for(bad.recv(), 5)
