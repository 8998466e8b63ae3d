"""Compact JSON for the hot paths (responses, stored quotes and orders), with orjson.

orjson is several times faster than the standard library but refuses integers beyond 64
bits, which the standard library writes exactly: amounts travel as strings, yet a
document may still carry a large int, so that case falls back.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

__all__ = ["dumps", "loads"]

loads = orjson.loads


def dumps(content: Any) -> bytes:
    try:
        return orjson.dumps(content)
    except TypeError:
        return json.dumps(content, separators=(",", ":"), ensure_ascii=False).encode()
