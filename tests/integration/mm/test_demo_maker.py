"""The demo market maker (`python -m scripts.demo_maker`) against the real API process."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.domain.types import ChainId
from scripts.demo_maker import MakerClient
from scripts.devnet.devnet import Devnet
from tests.conftest import ApiProcess
from tests.integration.mm.conftest import InThreadApi, manifest_of, ws_url

pytestmark = pytest.mark.integration

READY_SECONDS = 60  # a fresh interpreter's imports, login and first refresh on a loaded machine
STOP_SECONDS = 30  # Ctrl-C to exit: the close handshake is bounded at 3 s; generous for load


def _bot(
    api_url: str, key: str, manifest: Path, log: Path, *, parent_ignores_ctrl_c: bool = False
) -> subprocess.Popen[bytes]:
    """`python -m scripts.demo_maker` as `make up` runs it (refreshing every second); it
    runs until Ctrl-C (its own `--duration` is far beyond any test). With
    `parent_ignores_ctrl_c` it starts with SIGINT ignored and blocked, as a parent that
    ignores Ctrl-C leaves its children."""

    def ignore_ctrl_c() -> None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})

    with open(log, "wb") as out:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "scripts.demo_maker",
                "--api",
                api_url,
                "--key",
                key,
                "--manifest",
                str(manifest),
                "--duration",
                "600",
                "--refresh",
                "1",
                "--ttl",
                "10",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            preexec_fn=ignore_ctrl_c if parent_ignores_ctrl_c else None,
        )


def _interrupt(proc: subprocess.Popen[bytes]) -> int | None:
    """Ctrl-C; the bot's exit code, or None when it did not exit (it is killed then)."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
    try:
        return proc.wait(STOP_SECONDS)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return None


def _ctrl_c_once(proc: subprocess.Popen[bytes], log: Path, ready: Callable[[], bool]) -> int | None:
    """Wait (the bot alive) until `ready()`, then Ctrl-C; the bot's exit code (None: it did
    not exit and was killed). The bot never outlives this call."""
    try:
        deadline = time.monotonic() + READY_SECONDS
        while not ready():
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        return _interrupt(proc)
    finally:
        _interrupt(proc)


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
    proc = _bot(mm_api.url, maker.private_key, devnet.manifest_path, log)
    try:
        with httpx.Client(base_url=mm_api.url, timeout=10) as client:
            deadline = time.monotonic() + READY_SECONDS
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
            # Ctrl-C: the bot closes its socket and exits cleanly.
            assert _interrupt(proc) == 0, log.read_text()
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
        _interrupt(proc)
    text = log.read_text()
    assert "logged in as " + maker.address in text
    assert "ladders posted" in text
    assert "RATE_LIMITED" not in text  # the bot paces itself to the limits the server announced


async def test_demo_maker_answers_rfqs(
    mm_inproc: InThreadApi, devnet: Devnet, tmp_path: Any
) -> None:
    m = manifest_of(devnet)
    maker = m.makers[2]
    cid = m.chains[1].chain_id
    book = mm_inproc.hub.books.book
    weth, usdc = book.asset("WETH", ChainId(cid)), book.asset("USDC", ChainId(cid))
    log = tmp_path / "demo.log"
    proc = _bot(mm_inproc.url, maker.private_key, devnet.manifest_path, log)
    try:
        # Logged in and past its first refresh (it prices RFQs off the mids it last read).
        deadline = time.monotonic() + READY_SECONDS
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
        # Ctrl-C lands as the server's ack of the second quote does: the bot exits anyway.
        # (Off the test's loop: the wait blocks.)
        code = await asyncio.to_thread(_interrupt, proc)
    assert code == 0, log.read_text()
    assert [q.maker for q in sold] == [maker.address], log.read_text()
    assert [q.maker for q in bought] == [maker.address]
    bid, ask = sold[0].maker_amount, bought[0].taker_amount  # USDC for 1 WETH each way
    assert 1_000 * 10**6 < bid < ask < bid * 1.01  # a 20 bps spread around the pool mid
    assert sold[0].taker_amount == bought[0].maker_amount == 10**18
    assert "2 RFQ quotes" in log.read_text()


async def test_a_cancelled_recv_ends_even_as_a_message_arrives(
    mm_api: ApiProcess, devnet: Devnet
) -> None:
    """Ctrl-C stops the bot by cancelling its handler, which waits in `MakerClient.recv`. A
    message arriving in that instant must not keep it: with `asyncio.wait_for` (Python
    3.11) `recv` returned the message and dropped the cancellation, the handler waited for
    the next one, and the bot never exited (it hung after the RFQ test's last ack)."""
    client = await MakerClient.open(ws_url(mm_api), manifest_of(devnet).makers[0].private_key)
    raced = 0
    try:
        for _ in range(10):
            waiter = asyncio.create_task(client.recv("pong", timeout=30))
            await asyncio.sleep(0)  # waiting on the queue
            seen = len(client.received)
            ref = await client.send("ping", {})
            while not any(
                m["type"] == "pong" and m["payload"].get("ref") == ref
                for m in client.received[seen:]
            ):
                await asyncio.sleep(0)
            # The reader has queued the pong; cancel the waiter before it runs again.
            if waiter.cancel():
                raced += 1
                await asyncio.wait({waiter}, timeout=10)
                assert waiter.cancelled(), f"recv returned {waiter.result()} after its cancel"
                # Nothing was lost: the pong is still there for the next reader.
                assert (await client.recv("pong"))["payload"]["ref"] == ref
            else:
                assert (await waiter)["payload"]["ref"] == ref
        assert raced > 0  # the race this test is about did happen
    finally:
        await client.close()


@contextlib.contextmanager
def _silent_rpc() -> Iterator[tuple[str, threading.Event]]:
    """A JSON-RPC endpoint that accepts connections and reads requests, but never answers
    (a node stalled under load); the event is set once a request has come in."""
    server = socket.create_server(("127.0.0.1", 0))
    asked = threading.Event()
    held: list[socket.socket] = []

    def serve() -> None:
        with contextlib.suppress(OSError):
            while True:
                conn, _ = server.accept()
                held.append(conn)
                if conn.recv(65536):
                    asked.set()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.getsockname()[1]}", asked
    finally:
        with contextlib.suppress(OSError):
            server.shutdown(socket.SHUT_RDWR)  # wakes the accept
        server.close()
        thread.join(5)
        for conn in held:
            conn.close()


def test_ctrl_c_ends_the_bot_even_when_its_parent_ignores_it(
    mm_api: ApiProcess, devnet: Devnet, tmp_path: Path
) -> None:
    m = manifest_of(devnet)
    maker = m.makers[1]
    log = tmp_path / "demo.log"
    proc = _bot(mm_api.url, maker.private_key, devnet.manifest_path, log, parent_ignores_ctrl_c=True)
    code = _ctrl_c_once(proc, log, lambda: "logged in as " + maker.address in log.read_text())
    text = log.read_text()
    assert code == 0, text
    assert "signals from the parent restored" in text and "done:" in text


def test_ctrl_c_ends_the_bot_while_its_rpc_read_is_stalled(
    mm_api: ApiProcess, devnet: Devnet, tmp_path: Path
) -> None:
    m = manifest_of(devnet)
    maker = m.makers[1]
    log = tmp_path / "demo.log"
    with _silent_rpc() as (rpc_url, asked):
        doc = json.loads(devnet.manifest_path.read_text())
        for chain in doc["chains"]:
            chain["rpcUrl"] = rpc_url  # where the bot reads its mid prices
        manifest = tmp_path / "manifest.json"
        manifest.write_text(json.dumps(doc))
        proc = _bot(mm_api.url, maker.private_key, manifest, log)
        # Logged in, and its read of the first chain's reserves is pending: Ctrl-C.
        code = _ctrl_c_once(
            proc, log, lambda: "logged in as " + maker.address in log.read_text() and asked.is_set()
        )
    text = log.read_text()
    assert code == 0, text
    assert "done: 0 ladders posted, 0 RFQ quotes" in text
