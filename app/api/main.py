"""The HTTP/WebSocket service: `create_app()` wires the services to thin routes.

On start it loads the manifest, starts one chain adapter per chain (the live book),
connects Redis and builds the quote service; on stop it closes them in reverse.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import redis.asyncio as aioredis
from fastapi import FastAPI

from app.api.deps import Services
from app.api.errors import install_error_handlers
from app.api.fastlane import FastLane, trading_requests
from app.api.load import LoadReporter
from app.api.loop_health import LoopHealth
from app.api.middleware import EdgeMiddleware, TokenBucket
from app.api.routes import info, mm, quote, swap
from app.domain import native
from app.domain.router import GasModel, Router
from app.domain.types import ChainId
from app.logs import setup_logging
from app.manifest import Manifest
from app.services.book_service import BookService
from app.services.followers import Followers
from app.services.ledger import Ledger
from app.services.makers import MakerHub, MakerHubConfig
from app.services.orders import OrderService
from app.services.quote_store import RedisQuoteStore
from app.services.quotes import QuoteService
from app.settings import Settings, get_settings
from settlement.zk.legs import LEAF_INPUTS
from settlement.zk.poseidon import prepare

__all__ = ["create_app"]

log = logging.getLogger("crossbook.api")


# Generation-1 collections after this many generation-0 ones (Python: 10), and full ones
# after this many generation-1 ones (Python: 10).
YOUNG_GC_EVERY = 3
FULL_GC_EVERY = 600


def _settle_heap() -> None:
    """After start-up, move every live object out of the collector's sight. A full
    collection over the start-up heap (manifest, books, keys, imported modules) takes
    ~25 ms, a pause every request queued behind it would wait for; what requests
    allocate is still collected as usual.

    Then make full collections rare. Under swap load the API holds every open order's
    reservation; Python's default ran a full collection over them every ~5 s (measured
    with `crossbook_gc_pause_seconds`: 6 in a 30 s swap run, 25-250 ms each on a loaded
    machine). Reference counting frees nearly everything a request allocates; the full
    collection only finds reference cycles, which can wait a few minutes. Generation-1
    collections run three times as often over a third of the objects: the same work in
    shorter pauses (measured under swap load: 1.6-2.6 ms of CPU each instead of 3.8-5.6)."""
    gc.collect()
    gc.freeze()
    young, _, _ = gc.get_threshold()
    gc.set_threshold(young, YOUNG_GC_EVERY, FULL_GC_EVERY)


def _warm() -> None:
    """Do at start the one-time work the first swap would otherwise do on the event loop,
    every request behind it waiting: Poseidon's constants for the receipts' leaf hash
    (~150 ms of pure Python; the benchmark's warm-up swaps showed it as a p99 of
    150-210 ms)."""
    prepare(LEAF_INPUTS)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        setup_logging(settings.log_level)
        log.log(
            logging.INFO if native.ACTIVE else logging.WARNING,
            "router " + ("compiled" if native.ACTIVE else "uncompiled"),
            extra={"routerCompiled": native.ACTIVE, "reason": native.REASON},
        )
        manifest = Manifest.load(settings.manifest)
        books = BookService(manifest)
        await books.start()
        redis = aioredis.Redis.from_url(settings.redis_url or "redis://127.0.0.1:6379/0")
        gas = GasModel(
            gas_price_wei={ChainId(c.chain_id): int(settings.gas_price_gwei * 10**9) for c in manifest.chains},
            batch_size=settings.settlement_batch_size,
        )
        quotes = QuoteService(
            manifest,
            books,
            Router(gas=gas),
            RedisQuoteStore(redis),
            operator_key=settings.operator_key or manifest.operator.private_key,
            ttl_seconds=settings.quote_ttl_seconds,
            protocol_fee_bps=settings.protocol_fee_bps,
        )
        orders = OrderService(
            manifest, books, quotes, Ledger(redis), operator_key=settings.operator_key or manifest.operator.private_key
        )
        await orders.restore()
        app.state.services = Services(manifest=manifest, books=books, quotes=quotes, orders=orders, redis=redis)
        makers = MakerHub(manifest, books, MakerHubConfig.from_settings(settings, manifest))
        await makers.start(redis)
        app.state.services.makers = makers
        quotes.makers = makers  # RFQ for large quotes
        orders.makers = makers  # fill notices
        followers = Followers(redis, books, quotes)
        await followers.start()
        health = LoopHealth()
        health.start()
        load = LoadReporter(redis, trading_requests)
        load.start()
        _warm()
        _settle_heap()
        try:
            yield
        finally:
            await load.stop()
            await health.stop()
            await followers.stop()
            await makers.stop()
            await books.stop()
            with contextlib.suppress(Exception):  # the quotes written behind their replies
                await asyncio.wait_for(quotes.store.flush(), 5)
            await redis.aclose()

    app = _CrossbookApi(
        title="Crossbook",
        version="0.1.0",
        description="Cross-chain liquidity aggregator: quotes over every pool and market maker on every chain, "
        "instant confirmations, Groth16-proven settlement. Errors use one envelope with a documented code enum.",
        lifespan=lifespan,
        # Our own Prometheus metrics cover requests; FastAPI's OpenTelemetry hooks would
        # read the environment on every request to find no provider.
        telemetry={"tracing": False, "metrics": False, "logs": False, "operation_spans": False},
    )
    install_error_handlers(app)
    app.include_router(quote.router)
    app.include_router(swap.router)
    app.include_router(info.router)
    app.include_router(mm.router)
    app.edge = lambda inner: EdgeMiddleware(
        FastLane(inner),
        max_body=settings.max_body_bytes,
        limiter=TokenBucket(settings.rate_limit_per_second, settings.rate_limit_burst),
    )
    return app


class _CrossbookApi(FastAPI):
    """FastAPI with the edge outermost: `EdgeMiddleware` (request id, body cap, rate limit,
    metrics) wraps the fast lane, which wraps FastAPI's own stack. The hot POST routes
    then pass through none of Starlette's middleware layers (measured: ~7 % of a quote's
    CPU), and every other request still gets the edge exactly once."""

    edge: Callable[[Any], Any] | None = None

    def build_middleware_stack(self) -> Any:
        inner = super().build_middleware_stack()
        return inner if self.edge is None else self.edge(inner)
