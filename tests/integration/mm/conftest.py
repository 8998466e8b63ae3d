"""Fixtures for the market-maker WebSocket: the API with fast heartbeats and tight limits.

- `mm_api`: `crossbook api` as a subprocess (like the shared `api` fixture) with a 1 s
  heartbeat, 5 `levels`/s, a 1 s cool-down and a 3 s challenge, once per session;
- `mm_inproc`: the same app served by uvicorn in a thread of the test process, so a test
  can call the `MakerHub` (RFQ, notices) the way the quote and settlement paths will.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar

import pytest
import uvicorn

from app.api.main import create_app
from app.manifest import Manifest
from app.services.makers import MakerHub
from app.settings import Settings
from scripts.devnet.devnet import Devnet
from scripts.devnet.ports import free_port
from scripts.redis_server import EmbeddedRedis
from tests.conftest import ApiProcess, embedded_redis, own_devnet

T = TypeVar("T")


@pytest.fixture(scope="session")
def devnet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Devnet]:
    """This package's own 3-chain devnet. Tests elsewhere leave chain state behind (vault
    cursors, maker and trader balances, unsettled confirmations) that these tests must
    not inherit. Overrides the root fixture here only; `clean_devnet` follows it."""
    with own_devnet(tmp_path_factory.mktemp("mm-devnet")) as net:
        yield net

@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis]:
    """This package's own Redis, as its own devnet: an API started on the shared one
    restores every open order other tests confirmed (their pool trades on the other
    devnet's pools, whose addresses are the same) into its book, which then shows these
    pools moved while the chain (and a maker pricing from it) does not."""
    with embedded_redis(tmp_path_factory.mktemp("mm-redis")) as server:
        yield server


MM_ENV = {
    "CROSSBOOK_MM_HEARTBEAT_SECONDS": "1",
    "CROSSBOOK_MM_LEVELS_PER_SECOND": "5",
    "CROSSBOOK_MM_COOLDOWN_SECONDS": "1",
    "CROSSBOOK_MM_CHALLENGE_TTL_SECONDS": "3",
}


@pytest.fixture(scope="session")
def mm_api(
    devnet: Devnet, redis_server: EmbeddedRedis, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ApiProcess]:
    proc = ApiProcess(
        devnet.manifest_path, redis_server.url, tmp_path_factory.mktemp("mm-api"), **MM_ENV
    )
    try:
        yield proc
    finally:
        proc.stop()


class InThreadApi:
    """The app under uvicorn on its own event loop in a daemon thread."""

    def __init__(self, settings: Settings) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.app = create_app(settings)
        config = uvicorn.Config(
            self.app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on"
        )
        self.server = uvicorn.Server(config)
        self.loop: asyncio.AbstractEventLoop | None = None
        self.thread = threading.Thread(target=lambda: asyncio.run(self._serve()), daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("in-thread API did not start")
            time.sleep(0.05)

    async def _serve(self) -> None:
        self.loop = asyncio.get_running_loop()
        await self.server.serve()

    @property
    def hub(self) -> MakerHub:
        hub = self.app.state.services.makers
        assert hub is not None
        return hub

    def submit(self, coro: Coroutine[Any, Any, T]) -> asyncio.Future[T]:
        """Run `coro` on the server's loop; await the returned future from the test's loop."""
        assert self.loop is not None
        return asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self.loop))

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(15)


@pytest.fixture(scope="session")
def mm_inproc(devnet: Devnet, redis_server: EmbeddedRedis) -> Iterator[InThreadApi]:
    settings = Settings(
        manifest=devnet.manifest_path,
        redis_url=redis_server.url,
        mm_heartbeat_seconds=1.0,
        rfq_deadline_ms=300,
    )
    api = InThreadApi(settings)
    try:
        yield api
    finally:
        api.stop()


def ws_url(api: ApiProcess | InThreadApi) -> str:
    return api.url.replace("http://", "ws://") + "/v1/ws/mm"


def manifest_of(devnet: Devnet) -> Manifest:
    assert devnet.manifest is not None
    return devnet.manifest
