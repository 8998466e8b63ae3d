"""`POST /v1/swap` and order status: `GET /v1/orders/{id}`, `GET /v1/orders?trader=`,
and the `WS /v1/ws/orders?trader=` stream of status changes."""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Annotated, Any

from fastapi import APIRouter, Query, WebSocket, WebSocketDisconnect

from app.api.deps import ServicesDep
from app.api.errors import ApiError, ErrorCode
from app.api.responses import JsonBytes
from app.api.schemas import OrderBody, SwapBody, _address
from app.domain.order import Order
from app.services.quotes import parse_amount

router = APIRouter(tags=["swaps"])


def _any_uint(value: str, name: str) -> int:
    """A uint256 decimal string (zero allowed: a nonce, or a minimum of nothing)."""
    if not value.isascii() or not value.isdigit() or len(value) > 78 or int(value) >= 2**256:
        raise ApiError(ErrorCode.INVALID_REQUEST, f"{name} must be a uint256 decimal string", [{"field": name}])
    return int(value)


def order_from_body(body: OrderBody) -> Order:
    return Order(
        trader=body.trader,
        sell_chain_id=body.sellChainId,
        sell_token=body.sellToken,
        sell_amount=parse_amount(body.sellAmount, "order.sellAmount"),
        buy_chain_id=body.buyChainId,
        buy_token=body.buyToken,
        min_buy_amount=_any_uint(body.minBuyAmount, "order.minBuyAmount"),
        recipient=body.recipient,
        nonce=_any_uint(body.nonce, "order.nonce"),
        deadline=body.deadline,
        quote_id=body.quoteId,
    )


@router.post(
    "/v1/swap", summary="Confirm a signed order against its quote (instant, durable, signed receipt)", response_class=JsonBytes
)
async def swap(body: SwapBody, services: ServicesDep) -> JsonBytes:
    return JsonBytes(await services.orders.confirm(body.quoteId, order_from_body(body.order), body.signature))


@router.get("/v1/orders/{order_id}", summary="An order's state, legs, confirmations and receipt")
async def order_status(order_id: str, services: ServicesDep) -> dict[str, Any]:
    if not (order_id.startswith("0x") and len(order_id) == 66):
        raise ApiError(ErrorCode.INVALID_REQUEST, "order id is a 0x-prefixed 32-byte hash", [{"field": "order_id"}])
    return await services.orders.status(order_id)


@router.get("/v1/orders", summary="A trader's orders, newest first (paged)")
async def orders_of(
    services: ServicesDep,
    trader: Annotated[str, Query(max_length=42)],
    before: Annotated[int | None, Query(ge=0, description="page cursor: `next` of the previous page")] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> dict[str, Any]:
    try:
        who = _address(trader)
    except ValueError as e:
        raise ApiError(ErrorCode.INVALID_REQUEST, str(e), [{"field": "trader"}]) from None
    return await services.orders.list_for(who, before, limit)


@router.websocket("/v1/ws/orders")
async def order_stream(websocket: WebSocket, trader: str) -> None:
    """Streams `{"orderId", "state"}` for each status change of the trader's orders,
    followed by the full status document."""
    try:
        who = _address(trader)
    except ValueError:
        await websocket.close(code=1008, reason="trader must be an address")
        return
    services = websocket.app.state.services
    await websocket.accept()
    pubsub = services.redis.pubsub()
    await pubsub.subscribe(f"orders:{who.lower()}")
    try:
        while True:
            msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
            if msg is None:
                # Notice a client that went away even when nothing is published.
                with contextlib.suppress(asyncio.TimeoutError):
                    incoming = await asyncio.wait_for(websocket.receive(), 0.001)
                    if incoming.get("type") == "websocket.disconnect":
                        return
                continue
            event = json.loads(msg["data"])
            status = await services.orders.status(event["orderId"])
            await websocket.send_json({"type": "order", "orderId": event["orderId"], "state": event["state"], "status": status})
    except (WebSocketDisconnect, RuntimeError):
        return
    finally:
        await pubsub.unsubscribe()
        await pubsub.aclose()

