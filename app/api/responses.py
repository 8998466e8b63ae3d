"""JSON responses serialised once with the standard library, skipping FastAPI's generic
encoder (which walks every value of a large quote document again)."""

from __future__ import annotations

import json
from typing import Any

from fastapi.responses import Response

__all__ = ["JsonBytes"]


class JsonBytes(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return json.dumps(content, separators=(",", ":"), ensure_ascii=False).encode()
