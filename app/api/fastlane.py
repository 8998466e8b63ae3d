"""The two hot routes, `POST /v1/quote` and `POST /v1/swap`, served without FastAPI's
per-request machinery.

FastAPI resolves dependencies, matches routes and validates through generic layers that,
measured with py-spy under load, cost more CPU than pricing the quote itself. These two
routes need none of it: the body is one pydantic model (`QuoteBody`, `SwapBody`, the same
models the OpenAPI schema and the FastAPI routes use), validated straight from the bytes
by pydantic-core, and the services come from `app.state`. Responses and errors are the
same as the FastAPI routes' (the envelope of app.api.errors); the edge concerns (request
id, body cap, rate limit, metrics) stay in `EdgeMiddleware`, which wraps this.

Every other path, and these paths with another method, go to FastAPI as before.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from pydantic import ValidationError

from app.api.errors import STATUS, ApiError, ErrorCode, error_body, to_api_error, validation_error
from app.api.middleware import ASGIApp, Receive, Scope, Send, TooLarge
from app.api.routes.quote import quote_request
from app.api.routes.swap import order_from_body
from app.api.schemas import QuoteBody, SwapBody
from app.json_codec import dumps

__all__ = ["FastLane", "trading_requests"]

Handler = Callable[[Any, bytes], Awaitable[dict[str, Any]]]


async def _quote(services: Any, body: bytes) -> dict[str, Any]:
    req = quote_request(QuoteBody.model_validate_json(body))
    result: dict[str, Any] = await services.quotes.quote(req)
    return result


async def _swap(services: Any, body: bytes) -> dict[str, Any]:
    b = SwapBody.model_validate_json(body)
    result: dict[str, Any] = await services.orders.confirm(b.quoteId, order_from_body(b.order), b.signature)
    return result


ROUTES: dict[str, Handler] = {"/v1/quote": _quote, "/v1/swap": _swap}
_served = 0  # quote and swap requests this process has received (app/api/load.py reports the rate)


def trading_requests() -> int:
    return _served


class FastLane:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        handler = ROUTES.get(scope.get("path", "")) if scope["type"] == "http" and scope.get("method") == "POST" else None
        if handler is None:
            await self.app(scope, receive, send)
            return
        global _served
        _served += 1
        rid = scope.get("state", {}).get("request_id", "")
        try:
            body = await _read_body(receive)
            doc = await handler(scope["app"].state.services, body)
        except ValidationError as e:
            await _send_error(send, validation_error(e.errors(include_url=False)), rid)
            return
        except TooLarge:
            await _send_error(send, ApiError(ErrorCode.PAYLOAD_TOO_LARGE, "request body too large"), rid)
            return
        except Exception as e:
            await _send_error(send, to_api_error(e, rid, scope.get("path", "")), rid)
            return
        await _send_json(send, 200, dumps(doc), [])


async def _read_body(receive: Receive) -> bytes:
    chunks = []
    while True:
        msg = await receive()
        if msg["type"] == "http.disconnect":
            break
        chunks.append(msg.get("body", b""))
        if not msg.get("more_body", False):
            break
    return b"".join(chunks)


async def _send_error(send: Send, err: ApiError, rid: str) -> None:
    extra = [(k.lower().encode(), v.encode()) for k, v in err.headers.items()]
    await _send_json(send, STATUS[err.code], dumps(error_body(err.code, err.message, err.details, rid)), extra)


async def _send_json(send: Send, status: int, body: bytes, extra: list[tuple[bytes, bytes]]) -> None:
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *extra]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
