"""API errors and the one place that maps every error to API.md's codes.

Handlers and the service raise; they never build error responses themselves. The service
raises domain errors (:mod:`projections.errors`), the store raises store errors
(:mod:`eventstore.errors`); :data:`ERROR_TABLE` below is the only place that gives them an HTTP
status, and :func:`to_api_error` the only function that reads it (:func:`exception_answer` for
REST, the WebSocket handler for its refusals). The classes the table knows::

    ApiError(status, code)               as given: HTTP-level refusals of a handler (400 invalid_json,
                                         400 invalid_parameter, 401, 413, 415, 429, 503 shutting down)
    projections.DomainError and below    ERROR_TABLE: 422 / 404 / 403 / 409 / 412 with the error's code
    eventstore.IdempotencyKeyReused      422 idempotency_key_reused
    eventstore.UnrepresentableValue      422 validation_error, details {what: problem}
    eventstore.ConcurrencyConflict       409 conflict + details.head_seq (the service retries these and
                                         raises WriteConflict itself; this row keeps a stray one from
                                         ever reading as unavailability)
    eventstore.StoreUnavailable          503 unavailable (Retry-After)
    eventstore.StoreError                503 unavailable (Retry-After)
    aiohttp HTTPException                its status, with a JSON body (404 not_found, 405 method_not_allowed, 413…)
    anything else                        500 internal_error, logged, never with a stack trace in the body
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web
from aiohttp.typedefs import Handler

from eventstore import errors as store_errors
from projections.errors import (
    AlreadyCollaborator,
    CannotRemoveCreator,
    DomainError,
    DraftArchived,
    Forbidden,
    IdempotencyKeyReused,
    InvalidRingTarget,
    NotCollaborator,
    NotFound,
    NotRingHolder,
    PreconditionFailed,
    ValidationFailed,
    WriteConflict,
)
from projections.runner import UnfoldableRecord

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Answer:
    """How one error class is answered over HTTP.

    ``code`` / ``message`` None: the error's own ``code`` / ``message`` (domain errors carry
    them); ``details``: a function of the error giving ``details`` (None: the error's own
    ``details`` attribute, if any); ``retry_after``: the ``Retry-After`` header, in seconds.
    """

    status: int
    code: str | None = None
    message: str | None = None
    details: Callable[[Any], Any] | None = None
    retry_after: str | None = None


ERROR_TABLE: dict[type[Exception], Answer] = {
    # the draft's rules (projections.decide) and the service's checks around them
    ValidationFailed: Answer(422),
    NotFound: Answer(404),
    Forbidden: Answer(403),
    NotRingHolder: Answer(409),
    InvalidRingTarget: Answer(409),
    AlreadyCollaborator: Answer(409),
    CannotRemoveCreator: Answer(409),
    NotCollaborator: Answer(409),
    DraftArchived: Answer(409),
    PreconditionFailed: Answer(412),
    WriteConflict: Answer(409),
    IdempotencyKeyReused: Answer(422),
    DomainError: Answer(400),  # a rule added without a row of its own: still the client's fault, never 500
    # the store's own errors, when one reaches a handler unchanged
    store_errors.IdempotencyKeyReused: Answer(
        422, "idempotency_key_reused", "this Idempotency-Key was already used for another request"
    ),
    store_errors.ConcurrencyConflict: Answer(
        409,
        "conflict",
        "other writers changed the draft meanwhile; retry",
        details=lambda e: {"head_seq": e.actual_seq},
    ),
    store_errors.UnrepresentableValue: Answer(
        422, "validation_error", details=lambda e: {e.what: e.problem}
    ),  # a value no store can keep: this request's own, never the storage's fault
    store_errors.StoreUnavailable: Answer(
        503, "unavailable", "storage is unavailable; retry shortly", retry_after="1"
    ),
    store_errors.StoreError: Answer(503, "unavailable", "storage error; retry shortly", retry_after="1"),
    # the storage's fault, never the client's: a record written past ringlog (the draft is set aside)
    UnfoldableRecord: Answer(
        500,
        "internal_error",
        "this draft's log holds an event the server cannot fold; the draft is set aside until an "
        "operator repairs the log",
        details=lambda e: {"position": e.position},
    ),
}
"""Error class -> its HTTP answer (API.md "HTTP API" errors, "Errors added"). Looked up along the
error's MRO, so a subclass without its own row is answered as its nearest listed base."""

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
"""Codes for aiohttp's own HTTP exceptions (unknown route, wrong method, body too large…)."""


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
    """The contract error for ``exc`` (an ApiError, a domain or a store error); None if not ours.

    The one reading of :data:`ERROR_TABLE`: REST answers with it through :func:`exception_answer` (called by `server.front`),
    the WebSocket refuses with the same status/code/message.
    """
    if isinstance(exc, ApiError):
        return exc
    for cls in type(exc).__mro__:
        answer = ERROR_TABLE.get(cls)
        if answer is not None:
            break
    else:
        return None
    code = answer.code if answer.code is not None else getattr(exc, "code", "error")
    message = answer.message if answer.message is not None else getattr(exc, "message", str(exc))
    details = answer.details(exc) if answer.details is not None else getattr(exc, "details", None)
    headers = {"Retry-After": answer.retry_after} if answer.retry_after is not None else None
    return ApiError(answer.status, code, message, details, headers)


def exception_answer(request: web.Request, exc: Exception) -> web.Response | None:
    """The contract's JSON error response for an exception a handler raised; None for an
    aiohttp ``HTTPException`` below 400 (a redirect), which the caller lets through.

    aiohttp's HTTP exceptions keep their status (:data:`HTTP_CODES`), ours and the domain's and
    the store's are read from :data:`ERROR_TABLE` (:func:`to_api_error`), anything else is 500
    ``internal_error``, logged with its stack trace (never in the body). 503s are logged as
    warnings.
    """
    if isinstance(exc, web.HTTPException):
        if exc.status < 400:
            return None
        code = HTTP_CODES.get(exc.status, "http_error")
        message = exc.reason if exc.status != 413 else "request body is larger than 64 KiB"
        headers = {k: v for k, v in exc.headers.items() if k.lower() in ("allow", "retry-after")}
        return error_response(exc.status, code, message, headers=headers)
    api = to_api_error(exc)
    if api is None:
        log.error("unhandled error on %s %r", request.method, request.path, exc_info=exc)
        return error_response(500, "internal_error", "internal error")
    if api.status == 503:
        log.warning("%s %r: %r", request.method, request.path, exc)
    return error_response(api.status, api.code, api.message, api.details, api.headers)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn every exception into the contract's JSON error body (:func:`exception_answer`).

    The app itself runs this mapping inside its one middleware (:mod:`server.front`); this
    middleware is the same mapping on its own, for an application that needs only it."""
    try:
        return await handler(request)
    except Exception as exc:
        answer = exception_answer(request, exc)
        if answer is None:
            raise
        return answer
