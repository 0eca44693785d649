"""Kind: requests that are not HTTP — one log line each, never a traceback a client can repeat.

A NUL or DEL byte in a header value, a raw 0xFF in the path or a broken request line made
aiohttp log "Error handling request" at ERROR with a full traceback, so any client could fill
the log. server/protocol_log.py's filter (installed by ``create_app``) turns exactly aiohttp's
``HttpProcessingError`` family into one INFO line; a real bug in a handler still logs ERROR
with its traceback. The answer stays aiohttp's plain-text 400 (the request never reached us).
"""

from __future__ import annotations

import logging

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from server.protocol_log import PROTOCOL_LOGGER, install_protocol_refusal_filter
from tests.hardening.kit import app_client, raw_exchange

MALFORMED = [
    b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-User-Id: a\x00b\r\n\r\n",
    b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-User-Id: a\x7fb\r\n\r\n",
    b"GET /v1/collab/drafts/\xff HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /healthz HTTP/1.1\r\nHost: x\r\nBad Header: y\r\n\r\n",
    b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
    b"GET /healthz HTTP/9.9\r\nHost: x\r\n\r\n",
    b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Type: a\r\nContent-Type: b\r\n\r\n",
]


@pytest.mark.parametrize("request_bytes", MALFORMED)
async def test_a_malformed_request_is_one_info_line(caplog, request_bytes: bytes) -> None:
    caplog.set_level(logging.DEBUG, logger=PROTOCOL_LOGGER)
    async with app_client() as client:
        status, _, _ = await raw_exchange(client.port, request_bytes)
    assert status == 400
    records = [r for r in caplog.records if r.name == PROTOCOL_LOGGER]
    assert records, "aiohttp logged nothing"
    for record in records:
        assert record.levelno <= logging.INFO, record.getMessage()
        assert record.exc_info is None and record.exc_text is None
        text = record.getMessage()
        assert "\n" not in text and "\x00" not in text and "\x7f" not in text, text
        assert text.startswith("refused a malformed HTTP request from"), text


async def test_a_handler_bug_still_logs_its_traceback(caplog) -> None:
    install_protocol_refusal_filter()

    async def broken(request: web.Request) -> web.Response:
        raise RuntimeError("a real bug")

    app = web.Application()
    app.router.add_get("/", broken)
    caplog.set_level(logging.DEBUG, logger=PROTOCOL_LOGGER)
    client = TestClient(TestServer(app))
    await client.start_server()
    try:
        r = await client.get("/")
        assert r.status == 500
    finally:
        await client.close()
    errors = [r for r in caplog.records if r.name == PROTOCOL_LOGGER and r.levelno == logging.ERROR]
    assert errors and errors[0].exc_info is not None and isinstance(errors[0].exc_info[1], RuntimeError)


def test_the_filter_is_installed_once() -> None:
    install_protocol_refusal_filter()
    install_protocol_refusal_filter()
    logger = logging.getLogger(PROTOCOL_LOGGER)
    assert sum(type(f).__name__ == "ProtocolRefusalFilter" for f in logger.filters) == 1
