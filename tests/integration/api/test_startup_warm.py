"""A started API has already done the one-time work its first swap would otherwise do on
the event loop, with every request behind it waiting: Poseidon's constants for the
receipts' leaf hash."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from app.settings import Settings
from scripts.devnet.devnet import Devnet
from scripts.redis_server import EmbeddedRedis
from settlement.zk import poseidon
from settlement.zk.legs import LEAF_INPUTS
from tests.integration.mm.conftest import InThreadApi

pytestmark = pytest.mark.integration


def test_a_started_api_has_the_leaf_hash_constants(devnet: Devnet, redis_server: EmbeddedRedis) -> None:
    poseidon._fast_params.cache_clear()  # this process may have hashed before: start from none
    api = InThreadApi(Settings(manifest=devnet.manifest_path, redis_url=redis_server.url))
    try:
        async def look() -> tuple[Any, Any]:  # on the server's loop
            before = poseidon._fast_params.cache_info()
            poseidon._fast_params(LEAF_INPUTS + 1)  # the width the receipts' leaf hash uses
            return before, poseidon._fast_params.cache_info()

        assert api.loop is not None
        before, after = asyncio.run_coroutine_threadsafe(look(), api.loop).result(10)
    finally:
        api.stop()
    assert before.currsize == 1 and after.misses == before.misses  # computed at start, not now
