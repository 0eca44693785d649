"""Kind: values one store accepts and another refuses (issue 10, item 6).

Every store answers the same for any text id and any integer bound: a stream id, user id or
idempotency key that no backend can store (NUL, lone surrogates) reads as unknown (empty, 0,
None), never as ``StoreUnavailable``; an append carrying one is ``UnrepresentableValue``; read
bounds beyond 64 bits are clamped and a negative limit reads nothing; store log lines never
carry such a value raw. Hypothesis drives each store from a worker thread while the store stays
open on the test's own event loop.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eventstore import IdempotencyClaim, Store, UnrepresentableValue
from eventstore.store import StreamBodyReader
from eventstore.values import is_storable_text
from eventstore.verify import verify_log
from tests.eventstore.helpers import created, segment

T = TypeVar("T")

SPECIAL = [
    "\x00",
    "\ud800",
    "\udbff",
    "\udc00",
    "\udfff",
    "\x01",
    "\x1f",
    "\x7f",
    "\x85",
    "\u2028",
    "\ufeff",
    "\uffff",
]

ids = st.lists(
    st.one_of(st.sampled_from(SPECIAL), st.characters(exclude_categories=()), st.sampled_from("ab_")),
    min_size=1,
    max_size=12,
).map("".join)
"""Text ids mixing NUL, lone surrogates, control and other odd characters with plain ones."""

bounds = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([0, -1, 2**63 - 1, 2**63, -(2**63), -(2**63) - 1, 2**64]),
    st.integers(min_value=-3, max_value=12),
)

HYPOTHESIS = settings(
    max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)


def _on(loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` on the test's loop (where the store lives) from hypothesis's thread."""
    return asyncio.run_coroutine_threadsafe(coro, loop).result(timeout=60)


class _RawValues(logging.Handler):
    """Collects formatted store log lines that carry NUL or a lone surrogate."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.bad: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        line = self.format(record)
        if "\x00" in line or not is_storable_text(line):
            self.bad.append(ascii(line))


async def _run_given(check: Callable[[], None], calls: list[object]) -> None:
    """Run a hypothesis test in a thread; it must have run examples and logged no raw value."""
    handler = _RawValues()
    logger = logging.getLogger("eventstore")
    logger.addHandler(handler)
    try:
        await asyncio.to_thread(check)
    finally:
        logger.removeHandler(handler)
    assert len(calls) >= 100
    assert handler.bad == []


async def test_any_text_id_is_unknown_or_appendable_never_unavailable(store: Store) -> None:
    loop = asyncio.get_running_loop()
    await store.append("known", [created()], 0, IdempotencyClaim("alice", "known-key", "fp"))
    appended: set[str] = {"known"}

    async def one(text: str) -> None:
        if text not in appended:
            assert await store.read(text) == []
            assert await store.read(text, -5, 3) == []
            assert await store.head(text) == 0
            assert await store.load_snapshot(text) is None
            if isinstance(store, StreamBodyReader):
                assert await store.read_stream_bodies(text, 0, 10) == []
        assert await store.find_idempotency(text, "known-key") is None
        assert await store.find_idempotency("alice", text) is None
        before = await store.last_position()
        if is_storable_text(text):
            if text not in appended:
                result = await store.append(text, [created(text)], 0, IdempotencyClaim(text, text, "fp"))
                assert [r.seq for r in result.records] == [1]
                appended.add(text)
                assert await store.head(text) == 1
                found = await store.find_idempotency(text, text)
                assert found is not None and found.stream_id == text
        else:
            for attempt in (
                store.append(text, [created()], 0),
                store.append("known", [segment()], 1, IdempotencyClaim(text, "k", "fp")),
                store.append("known", [segment()], 1, IdempotencyClaim("alice", text, "fp")),
            ):
                with pytest.raises(UnrepresentableValue) as info:
                    await attempt
                assert str(info.value).isprintable()
            assert await store.last_position() == before

    calls: list[object] = []

    @HYPOTHESIS
    @given(text=ids)
    def check(text: str) -> None:
        calls.append(text)
        _on(loop, one(text))

    await _run_given(check, calls)
    report = await verify_log(store)
    assert report.ok and report.streams == len(appended)
    # whatever was appended reads back under the same id
    for text in appended:
        assert [r.stream_id for r in await store.read(text)] == [text]


async def test_read_bounds_of_any_size_mean_the_same_on_every_store(store: Store) -> None:
    loop = asyncio.get_running_loop()
    await store.append("s", [created(), *[segment(position=i) for i in range(1, 10)]], 0)
    await store.append("t", [created()], 0)
    everything = await store.read("s")
    whole_log = await store.read_all(0, 100)
    assert len(everything) == 10 and len(whole_log) == 11

    def expect(records: list[Any], key: Callable[[Any], int], after: int, limit: int | None) -> list[Any]:
        chosen = [r for r in records if key(r) > after]
        return chosen if limit is None else chosen[: max(limit, 0)]

    async def one(after: int, limit: int | None) -> None:
        assert await store.read("s", after, limit) == expect(everything, lambda r: r.seq, after, limit)
        if limit is not None:
            assert await store.read_all(after, limit) == expect(whole_log, lambda r: r.position, after, limit)
            if isinstance(store, StreamBodyReader):
                bodies = await store.read_stream_bodies("s", after, limit)
                assert bodies == [(r.seq, r.body) for r in expect(everything, lambda r: r.seq, after, limit)]

    calls: list[object] = []

    @HYPOTHESIS
    @given(after=bounds, limit=st.one_of(st.none(), bounds))
    def check(after: int, limit: int | None) -> None:
        calls.append((after, limit))
        _on(loop, one(after, limit))

    await _run_given(check, calls)


# -- through the API: the same answer on both stores --------------------------------------------

IMPOSSIBLE_PATH_IDS = ["a%00b", "%00", "draft_%ED%A0%80", "%C0%80", "x%FFy", "%F4%90%80%80"]
"""Draft ids in the path, percent-encoded: NUL, an encoded surrogate, overlong NUL, bad bytes."""


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def api(request: pytest.FixtureRequest, tmp_path: Any) -> Any:
    """An in-process server (dev auth, no rate limit) on each SQL store, with aiohttp's test client."""
    from aiohttp.test_utils import TestClient, TestServer

    from server.app import create_app
    from server.settings import Settings
    from tests.pgutil import temporary_database

    async def client_on(db: str) -> Any:
        app = create_app(Settings(db=db, dev_auth=True, rate_limit=0))
        client = TestClient(TestServer(app))
        await client.start_server()
        return client

    if request.param == "postgres":
        async with temporary_database() as url:
            client = await client_on(url)
            try:
                yield client
            finally:
                await client.close()
        return
    client = await client_on(str(tmp_path / "api.db"))
    try:
        yield client
    finally:
        await client.close()


@pytest.mark.parametrize("raw_id", IMPOSSIBLE_PATH_IDS)
async def test_an_impossible_draft_id_is_not_found_on_every_route_and_socket(
    api: Any, raw_id: str, caplog: pytest.LogCaptureFixture
) -> None:
    from yarl import URL

    headers = {"X-User-Id": "alice", "Content-Type": "application/json"}
    base = f"/v1/collab/drafts/{raw_id}"
    requests = [
        ("GET", base, None),
        ("GET", f"{base}/events?since=0", None),
        ("GET", f"{base}/events?since=0&wait=1", None),
        ("PATCH", base, b'{"title": "t"}'),
        ("POST", f"{base}/segments", b'{"content": "c"}'),
        ("POST", f"{base}/ring/pass", b'{"to_user_id": "bob"}'),
        ("POST", f"{base}/collaborators", b'{"user_id": "bob", "role": "viewer"}'),
    ]
    with caplog.at_level(logging.INFO):
        for method, path, body in requests:
            response = await api.request(method, URL(path, encoded=True), data=body, headers=headers)
            payload = await response.json()
            assert response.status == 404, (method, path, response.status, payload)
            assert payload["error"]["code"] == "not_found"
            assert "Retry-After" not in response.headers
        ws = await api.ws_connect(URL(f"/v1/ws/drafts/{raw_id}?user_id=alice", encoded=True))
        message = await ws.receive_json(timeout=10)
        assert message["type"] == "error" and message["code"] == "not_found"
        await ws.receive(timeout=10)
        assert ws.close_code == 4404
        await ws.close()
    raw = [ascii(r.getMessage()) for r in caplog.records if not is_storable_text(r.getMessage())]
    assert raw == []
