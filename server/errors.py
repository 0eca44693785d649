"""API errors and the one middleware that maps every error to API.md's codes.

Handlers raise; they never build error responses themselves. Mapping:

    ApiError(status, code)          as given (400 invalid_json, 400 invalid_parameter, 401, 412, 415, 429…)
    projections.DomainError         422 validation_error, 404 not_found, 403 forbidden, 409 …
    eventstore.IdempotencyKeyReused 422 idempotency_key_reused
    eventstore.StoreUnavailable     503 unavailable (Retry-After)
    eventstore.ConcurrencyConflict  503 unavailable (only after retries were exhausted)
    aiohttp HTTPException           its status, with a JSON body (404 not_found, 405 method_not_allowed, 413…)
    anything else                   500 internal_error, logged, never with a stack trace in the body
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
from aiohttp import web
from aiohttp.typedefs import Handler

from eventstore.errors import ConcurrencyConflict, IdempotencyKeyReused, StoreError, StoreUnavailable
from projections.errors import (
    AlreadyCollaborator,
    DomainError,
    Forbidden,
    InvalidRingTarget,
    NotFound,
    NotRingHolder,
    ValidationFailed,
)

log = logging.getLogger(__name__)

DOMAIN_STATUS: dict[type[DomainError], int] = {
    ValidationFailed: 422,
    NotFound: 404,
    Forbidden: 403,
    NotRingHolder: 409,
    InvalidRingTarget: 409,
    AlreadyCollaborator: 409,
}

HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    408: "request_timeout",
    413: "payload_too_large",
    415: "unsupported_media_type",
    429: "rate_limited",
    503: "unavailable",
}


class ApiError(Exception):
    """An error response of the contract: status, snake_case code, message, optional details."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: Any = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details
        self.headers = headers or {}


def error_response(
    status: int, code: str, message: str, details: Any = None, headers: dict[str, str] | None = None
) -> web.Response:
    """The JSON body ``{"error": {code, message, details?}}`` with ``status``."""
    error: dict[str, Any] = {"code": code, "message": message}
    if details is not None:
        error["details"] = details
    return web.Response(
        status=status,
        body=orjson.dumps({"error": error}),
        content_type="application/json",
        headers=headers,
    )


def to_api_error(exc: BaseException) -> ApiError | None:
    """Map a domain or store error to its contract error; None if it is not one of ours."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, DomainError):
        status = DOMAIN_STATUS.get(type(exc), 400)
        return ApiError(status, exc.code, exc.message, exc.details)
    if isinstance(exc, IdempotencyKeyReused):
        return ApiError(
            422,
            "idempotency_key_reused",
            "this Idempotency-Key was already used for another request",
        )
    if isinstance(exc, StoreUnavailable | ConcurrencyConflict):
        return ApiError(
            503, "unavailable", "storage is unavailable; retry shortly", headers={"Retry-After": "1"}
        )
    if isinstance(exc, StoreError):
        return ApiError(503, "unavailable", "storage error; retry shortly", headers={"Retry-After": "1"})
    return None


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn every exception into the contract's JSON error body."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = HTTP_CODES.get(exc.status, "http_error")
        message = exc.reason if exc.status != 413 else "request body is larger than 64 KiB"
        headers = {k: v for k, v in exc.headers.items() if k.lower() in ("allow", "retry-after")}
        return error_response(exc.status, code, message, headers=headers)
    except Exception as exc:
        api = to_api_error(exc)
        if api is None:
            log.exception("unhandled error on %s %s", request.method, request.path)
            return error_response(500, "internal_error", "internal error")
        if api.status == 503:
            log.warning("%s %s: %s", request.method, request.path, exc)
        return error_response(api.status, api.code, api.message, api.details, api.headers)
