"""JSON responses serialised once (app.json_codec), skipping FastAPI's generic encoder
(which walks every value of a large quote document again)."""

from __future__ import annotations

from typing import Any

from fastapi.responses import Response

from app.json_codec import dumps

__all__ = ["JsonBytes"]


class JsonBytes(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return dumps(content)
