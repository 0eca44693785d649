"""The one middleware every request passes through: text guard, CORS, latency metric, errors.

Four jobs, in this order (each one's rules live in its own module; this is only the order):

1. :func:`server.request_text.refusal`: ambiguous or undecodable request text is answered 400 /
   401 before anything else (no CORS headers, not timed);
2. a CORS preflight (``OPTIONS`` with ``Access-Control-Request-Method``) is answered here: 204
   with the allowed methods and headers, or 403 ``forbidden`` (the JSON error body) for an origin not allowed
   (:func:`server.origins.origin_allowed`, the same function as the WebSocket's ``Origin`` check);
3. the handler runs; an exception becomes the contract's JSON error body
   (:func:`server.errors.exception_answer`, the one reading of ``ERROR_TABLE``);
4. the request's latency goes into ``ringlog_http_request_duration_seconds`` (method, route,
   status), and an unprepared response from an allowed origin gets the CORS headers.

Why one middleware, not four: each aiohttp middleware is one more coroutine frame and
``functools.partial`` call per request, and every frame stays alive as long as its request —
for a WebSocket, as long as the socket. The socket routes (:data:`SocketHandlers`) are
therefore not awaited here at all: after the text guard their handler's coroutine is handed
back to aiohttp as it is, and the handler answers its own refusals before the upgrade with
:func:`answer_failure` (the same mapping and CORS headers as here). Sockets are not requests:
they are not timed.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Collection
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from server.errors import error_response, exception_answer
from server.metrics import Metrics
from server.origins import origin_allowed
from server.request_text import refusal

CORS_METHODS = "GET, POST, PATCH, DELETE, OPTIONS"
CORS_HEADERS = "Authorization, Content-Type, Idempotency-Key, If-Match, If-None-Match, X-User-Id"
CORS_EXPOSE = "ETag, Retry-After, Location, Idempotent-Replayed"

SocketHandlers = Collection[Any]
"""The route handlers of the WebSocket routes: passed through untimed and unwrapped."""


def add_cors(request: web.Request, response: web.StreamResponse, allowed: Collection[str]) -> None:
    """Add the CORS response headers to ``response`` when the request's ``Origin`` is allowed and
    the response is not sent yet (a simple request's answer; a preflight is answered apart)."""
    origin = request.headers.get("Origin")
    if origin is not None and not response.prepared and origin_allowed(allowed, origin, request.host):
        headers = response.headers
        headers["Access-Control-Allow-Origin"] = origin
        headers["Access-Control-Expose-Headers"] = CORS_EXPOSE
        headers["Vary"] = "Origin"


def answer_failure(request: web.Request, exc: Exception, allowed: Collection[str]) -> web.StreamResponse:
    """The HTTP answer for ``exc`` raised before a response was sent, CORS headers included:
    what the front middleware answers for a handler's exception (a WebSocket handler calls this
    for its refusals before the upgrade). Re-raises an ``HTTPException`` below 400 (a redirect),
    as the middleware lets those through."""
    answer = exception_answer(request, exc)
    if answer is None:
        raise exc
    add_cors(request, answer, allowed)
    return answer


def _preflight(request: web.Request, allowed: Collection[str]) -> web.Response:
    origin = request.headers.get("Origin")
    if not origin_allowed(allowed, origin, request.host):
        # The contract's error body (API.md "Errors"), with the WebSocket's words for the same refusal.
        return error_response(403, "forbidden", "this Origin is not allowed")
    return web.Response(
        status=204,
        headers={
            "Access-Control-Allow-Origin": origin or "",
            "Access-Control-Allow-Methods": CORS_METHODS,
            "Access-Control-Allow-Headers": CORS_HEADERS,
            "Access-Control-Max-Age": "600",
            "Vary": "Origin",
        },
    )


async def _answered(response: web.StreamResponse) -> web.StreamResponse:
    return response


def front_middleware(allowed: Collection[str], metrics: Metrics, sockets: SocketHandlers) -> Middleware:
    """The app's only middleware (see the module's docstring for what it does, in which order).

    ``allowed``: the normalised ``--allowed-origins``; ``metrics``: where request latencies go;
    ``sockets``: the WebSocket routes' handlers, which answer their own refusals before the
    upgrade and are neither wrapped nor timed.
    """
    latency = metrics.request_latency
    child = metrics.child

    async def timed(request: web.Request, handler: Handler) -> web.StreamResponse:
        started = time.perf_counter()
        status = 500
        try:
            try:
                response = await handler(request)
            except Exception as exc:
                answer = exception_answer(request, exc)
                if answer is None:
                    raise
                response = answer
            status = response.status
        except web.HTTPException as e:  # below 400: let through, as aiohttp answers it
            status = e.status
            raise
        finally:
            resource = request.match_info.route.resource
            route = resource.canonical if resource is not None else "unmatched"
            child(latency, request.method, route, str(status)).observe(time.perf_counter() - started)
        add_cors(request, response, allowed)
        return response

    @web.middleware
    def front(request: web.Request, handler: Handler) -> Awaitable[web.StreamResponse]:
        answer = refusal(request)
        if answer is not None:
            return _answered(answer)
        if request.method == "OPTIONS" and request.headers.get("Access-Control-Request-Method"):
            return _answered(_preflight(request, allowed))
        if handler in sockets:
            return handler(request)  # not awaited here: no frame of ours lives as long as the socket
        return timed(request, handler)

    return front
