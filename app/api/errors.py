"""The API's error envelope and code enum, in one place.

Every error leaves as
`{"error": {"code": "...", "message": "...", "details": [...]}, "requestId": "..."}`
with the status its code maps to. Validation failures become INVALID_REQUEST (400) with
one detail per offending field; an unexpected exception becomes INTERNAL (500) and is
logged with the request id, never shown as a stack trace.

Exception tree (raised by services, converted here):

    ApiError(code, message, details)        -> status of its code
    redis ConnectionError / TimeoutError    -> STORAGE_UNAVAILABLE (503, Retry-After)
    anything else                           -> INTERNAL (500), logged with the request id
"""

from __future__ import annotations

import logging
import uuid
from enum import StrEnum
from typing import Any

import redis.exceptions
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

__all__ = ["STATUS", "ApiError", "ErrorCode", "error_body", "install_error_handlers", "to_api_error", "validation_error"]

log = logging.getLogger("crossbook.api")


class ErrorCode(StrEnum):
    INVALID_REQUEST = "INVALID_REQUEST"
    UNKNOWN_CHAIN = "UNKNOWN_CHAIN"
    UNKNOWN_ASSET = "UNKNOWN_ASSET"
    SAME_ASSET = "SAME_ASSET"
    AMOUNT_TOO_SMALL = "AMOUNT_TOO_SMALL"
    AMOUNT_TOO_LARGE = "AMOUNT_TOO_LARGE"
    NOT_FOUND = "NOT_FOUND"
    METHOD_NOT_ALLOWED = "METHOD_NOT_ALLOWED"
    PAYLOAD_TOO_LARGE = "PAYLOAD_TOO_LARGE"
    QUOTE_NOT_FOUND = "QUOTE_NOT_FOUND"
    QUOTE_EXPIRED = "QUOTE_EXPIRED"
    QUOTE_STALE = "QUOTE_STALE"
    QUOTE_USED = "QUOTE_USED"
    NONCE_REUSED = "NONCE_REUSED"
    INVALID_SIGNATURE = "INVALID_SIGNATURE"
    ORDER_EXPIRED = "ORDER_EXPIRED"
    ORDER_MISMATCH = "ORDER_MISMATCH"
    INSUFFICIENT_BALANCE = "INSUFFICIENT_BALANCE"
    INSUFFICIENT_ALLOWANCE = "INSUFFICIENT_ALLOWANCE"
    INSUFFICIENT_LIQUIDITY = "INSUFFICIENT_LIQUIDITY"
    NO_ROUTE = "NO_ROUTE"
    CHAIN_UNAVAILABLE = "CHAIN_UNAVAILABLE"
    STORAGE_UNAVAILABLE = "STORAGE_UNAVAILABLE"
    RATE_LIMITED = "RATE_LIMITED"
    INTERNAL = "INTERNAL"


STATUS: dict[ErrorCode, int] = {
    ErrorCode.INVALID_REQUEST: 400,
    ErrorCode.UNKNOWN_CHAIN: 400,
    ErrorCode.UNKNOWN_ASSET: 400,
    ErrorCode.SAME_ASSET: 400,
    ErrorCode.AMOUNT_TOO_SMALL: 400,
    ErrorCode.AMOUNT_TOO_LARGE: 400,
    ErrorCode.INVALID_SIGNATURE: 400,
    ErrorCode.ORDER_MISMATCH: 400,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.QUOTE_NOT_FOUND: 404,
    ErrorCode.METHOD_NOT_ALLOWED: 405,
    ErrorCode.NONCE_REUSED: 409,
    ErrorCode.QUOTE_STALE: 409,
    ErrorCode.QUOTE_USED: 409,
    ErrorCode.QUOTE_EXPIRED: 410,
    ErrorCode.ORDER_EXPIRED: 410,
    ErrorCode.PAYLOAD_TOO_LARGE: 413,
    ErrorCode.INSUFFICIENT_BALANCE: 422,
    ErrorCode.INSUFFICIENT_ALLOWANCE: 422,
    ErrorCode.INSUFFICIENT_LIQUIDITY: 422,
    ErrorCode.NO_ROUTE: 422,
    ErrorCode.RATE_LIMITED: 429,
    ErrorCode.INTERNAL: 500,
    ErrorCode.CHAIN_UNAVAILABLE: 503,
    ErrorCode.STORAGE_UNAVAILABLE: 503,
}


class ApiError(Exception):
    def __init__(
        self,
        code: ErrorCode,
        message: str,
        details: list[Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details or []
        self.headers = headers or {}

    @property
    def status(self) -> int:
        return STATUS[self.code]


def _request_id(request: Request) -> str:
    rid = getattr(request.state, "request_id", None)
    return rid or uuid.uuid4().hex


def error_body(code: ErrorCode, message: str, details: list[Any], request_id: str) -> dict[str, Any]:
    return {"error": {"code": code.value, "message": message, "details": details}, "requestId": request_id}


def _response(request: Request, err: ApiError) -> JSONResponse:
    rid = _request_id(request)
    return JSONResponse(
        error_body(err.code, err.message, err.details, rid),
        status_code=err.status,
        headers={"X-Request-Id": rid, **err.headers},
    )


def validation_error(errors: Any) -> ApiError:
    """INVALID_REQUEST with one detail per offending field (pydantic's error list)."""
    out = []
    for e in errors:
        loc = [str(p) for p in e.get("loc", ()) if p not in ("body", "query", "path")]
        out.append({"field": ".".join(loc) or "body", "issue": e.get("msg", "invalid"), "type": e.get("type", "")})
    return ApiError(ErrorCode.INVALID_REQUEST, "request failed validation", out)


def to_api_error(exc: Exception, request_id: str, path: str) -> ApiError:
    """Any exception a handler raised, as the error it leaves as (logged when unexpected)."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, redis.exceptions.ConnectionError | redis.exceptions.TimeoutError):
        # Nothing was confirmed: the ledger step is atomic, so the client may retry.
        log.warning("redis unavailable", extra={"requestId": request_id, "error": str(exc)})
        return ApiError(ErrorCode.STORAGE_UNAVAILABLE, "order storage is unavailable; retry", headers={"Retry-After": "1"})
    log.exception("unhandled error", extra={"requestId": request_id, "path": path}, exc_info=exc)
    return ApiError(ErrorCode.INTERNAL, "internal error")


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return _response(request, exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        return _response(request, validation_error(exc.errors()))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: ErrorCode.NOT_FOUND, 405: ErrorCode.METHOD_NOT_ALLOWED, 413: ErrorCode.PAYLOAD_TOO_LARGE}.get(
            exc.status_code, ErrorCode.INVALID_REQUEST
        )
        return _response(request, ApiError(code, str(exc.detail)))

    @app.exception_handler(redis.exceptions.ConnectionError)
    @app.exception_handler(redis.exceptions.TimeoutError)
    @app.exception_handler(Exception)
    async def _other(request: Request, exc: Exception) -> JSONResponse:
        return _response(request, to_api_error(exc, _request_id(request), request.url.path))
