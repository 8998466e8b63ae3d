"""`/v1/ws/mm`: the market makers' WebSocket (protocol: docs/market-makers.md).

Thin: accept, hand every frame to the `MakerHub`, and tell it when the socket is gone.
The hub sends the challenge, decides when to close, and owns all state.
"""

from __future__ import annotations

import logging

from fastapi import APIRouter, WebSocket
from starlette.websockets import WebSocketDisconnect

from app.services.makers import MakerHub

__all__ = ["router"]

router = APIRouter(tags=["market makers"])
log = logging.getLogger("crossbook.api.mm")


@router.websocket("/v1/ws/mm")
async def maker_socket(ws: WebSocket) -> None:
    hub: MakerHub = ws.app.state.services.makers
    await ws.accept()

    async def send(text: str) -> None:
        await ws.send_text(text)

    async def close(code: int, reason: str) -> None:
        await ws.close(code, reason)

    session = await hub.connect(send, close)
    try:
        while not session.closed:
            msg = await ws.receive()
            if msg["type"] == "websocket.disconnect":
                break
            data = msg.get("text")
            if data is None:
                data = msg.get("bytes") or b""
            await hub.receive(session, data)
    except WebSocketDisconnect:
        pass
    except Exception:
        log.exception("maker socket failed", extra={"session": session.id})
        await session.close(1011, "internal error")
    finally:
        await hub.disconnect(session)
