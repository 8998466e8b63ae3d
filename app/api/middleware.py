"""One pure-ASGI middleware for the cross-cutting edge concerns: a request id on every
response, a cap on body size (413 before the body is read in full), a per-client token
bucket (429 with Retry-After), and Prometheus request metrics. Pure ASGI because
BaseHTTPMiddleware costs more per request than a whole quote."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from prometheus_client import Counter, Histogram
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.api.errors import STATUS, ErrorCode, error_body

__all__ = ["ASGIApp", "EdgeMiddleware", "Receive", "Scope", "Send", "TokenBucket", "TooLarge"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

REQUESTS = Counter("crossbook_http_requests_total", "HTTP requests", ["route", "status"])
LATENCY = Histogram(
    "crossbook_http_request_seconds",
    "HTTP request latency",
    ["route"],
    buckets=(0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
)


class TokenBucket:
    """Per-key token buckets: `rate` tokens per second, up to `burst`."""

    def __init__(self, rate: float, burst: float) -> None:
        self.rate = rate
        self.burst = burst
        self._state: dict[str, tuple[float, float]] = {}

    def take(self, key: str, now: float | None = None) -> float:
        """0 when allowed, else seconds until a token is available."""
        now = time.monotonic() if now is None else now
        tokens, last = self._state.get(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        if tokens >= 1:
            self._state[key] = (tokens - 1, now)
            return 0.0
        self._state[key] = (tokens, now)
        if len(self._state) > 100_000:  # bound memory under a spray of client keys
            self._state.clear()
        return (1 - tokens) / self.rate


class EdgeMiddleware:
    def __init__(self, app: ASGIApp, *, max_body: int = 64 * 1024, limiter: TokenBucket | None = None) -> None:
        self.app = app
        self.max_body = max_body
        self.limiter = limiter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = rid
        started = time.perf_counter()
        path = scope.get("path", "")
        route = path if path.startswith("/v1/") and path.count("/") <= 2 else path.rsplit("/", 1)[0] + "/*"
        status_holder = {"status": 500}

        async def send_wrapped(message: Message) -> None:
            if message["type"] == "http.response.start":
                status_holder["status"] = message["status"]
                headers = list(message.get("headers", []))
                if not any(k == b"x-request-id" for k, _ in headers):
                    headers.append((b"x-request-id", rid.encode()))
                message["headers"] = headers
            await send(message)

        try:
            length = next((int(v) for k, v in scope.get("headers", []) if k == b"content-length"), 0)
            if length > self.max_body:
                await self._error(send_wrapped, ErrorCode.PAYLOAD_TOO_LARGE, f"body over {self.max_body} bytes", rid)
                return
            if self.limiter is not None and path not in ("/healthz", "/metrics"):
                client = scope.get("client") or ("?", 0)
                wait = self.limiter.take(str(client[0]))
                if wait > 0:
                    await self._error(
                        send_wrapped, ErrorCode.RATE_LIMITED, "rate limit exceeded", rid, retry_after=max(1, int(wait + 0.999))
                    )
                    return
            await self.app(scope, self._capped(receive), send_wrapped)
        finally:
            REQUESTS.labels(route, str(status_holder["status"])).inc()
            LATENCY.labels(route).observe(time.perf_counter() - started)

    def _capped(self, receive: Receive) -> Receive:
        seen = 0

        async def wrapped() -> Message:
            nonlocal seen
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > self.max_body:
                    raise TooLarge()
            return msg

        return wrapped

    async def _error(self, send: Send, code: ErrorCode, message: str, rid: str, retry_after: int | None = None) -> None:
        body = json.dumps(error_body(code, message, [], rid)).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        if retry_after is not None:
            headers.append((b"retry-after", str(retry_after).encode()))
        await send({"type": "http.response.start", "status": STATUS[code], "headers": headers})
        await send({"type": "http.response.body", "body": body})


class TooLarge(StarletteHTTPException):
    """Raised while the body streams in (no or lying Content-Length); FastAPI's
    exception layer turns it into the PAYLOAD_TOO_LARGE envelope."""

    def __init__(self) -> None:
        super().__init__(413, "request body too large")
