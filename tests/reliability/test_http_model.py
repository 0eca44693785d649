"""A hypothesis state machine drives one live server's HTTP API and checks it against a model.

One ``ringlog serve`` (Bearer JWTs, rate limit off) for the module. Each hypothesis example has
its own users (a fresh tag) and creates its own drafts, so examples do not see each other.
Rules: create, append (with or without ``If-Match``; with an ``Idempotency-Key``, retried, then
reused with another body and by another user), pass the ring, add a collaborator, patch, GET state
(and 304 on its ETag), GET ``/events``, and malformed requests (invalid JSON, a body that is not an object,
wrong types, unknown or missing fields, over-long fields, the wrong content type, bad query
parameters). Every answer's status and error code must be the one the model (API.md's rules and
the order of checks in ``projections/decide.py``) predicts, never a 5xx; after every step each
draft's GET state must equal the model.

The model's order of checks for a mutation: the body's shape (415, 400 ``invalid_json``, 422 for
types / unknown / missing / empty fields), then 404, 403 (stranger or viewer), 422 for the
domain's limits (over-long, blank title, bad user id), 412 (stale ``If-Match``), 409.
"""

from __future__ import annotations

import http.client
import os
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from tests.serverproc import ServerProcess, make_token

USERS = 4  # per example: u0..u3, each a creator, contributor, viewer or stranger per draft
MAX_DRAFTS = 3
EXAMPLES = int(os.environ.get("RINGLOG_MODEL_EXAMPLES", "150"))  # more for a run by hand
NO_DRAFT = "draft_" + "0" * 20  # well-formed, never created

Expected = tuple[int, str | None]  # (status, error code or None for a success)
OUTCOMES: Counter[Expected] = Counter()  # every checked answer, to show what the run covered


@dataclass
class ModelDraft:
    """What the server's state of one draft must be."""

    id: str
    creator: str
    title: str
    description: str = ""
    roles: dict[str, str] = field(default_factory=dict)  # collaborators in order of addition
    holder: str = ""
    history: list[str] = field(default_factory=list)
    segments: list[tuple[str, str]] = field(default_factory=list)  # (author, content)
    types: list[str] = field(default_factory=lambda: ["collab.draft_created"])

    @property
    def seq(self) -> int:
        return len(self.types)

    def role(self, user: str) -> str | None:
        return "creator" if user == self.creator else self.roles.get(user)


class Client:
    """A synchronous JSON client over one keep-alive connection (reopened after ``Connection: close``)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.conn: http.client.HTTPConnection | None = None
        self.tokens: dict[str, str] = {}

    def request(
        self,
        method: str,
        path: str,
        user: str | None,
        body: Any = None,
        *,
        raw: bytes | None = None,
        content_type: str = "application/json",
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any, http.client.HTTPResponse]:
        h = dict(headers or {})
        if user is not None:
            token = self.tokens.get(user)
            if token is None:
                token = self.tokens[user] = make_token(user)
            h["Authorization"] = f"Bearer {token}"
        payload = raw if raw is not None else (orjson.dumps(body) if body is not None else None)
        if payload is not None:
            h["Content-Type"] = content_type
        # no retry: a mutation retried after a broken connection could be applied twice
        if self.conn is None:
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        self.conn.request(method, path, body=payload, headers=h)
        response = self.conn.getresponse()
        data = response.read()
        assert response.status < 500, (method, path, response.status, data[:500])
        parsed = (
            orjson.loads(data)
            if data and response.getheader("Content-Type", "").startswith("application/json")
            else data
        )
        if response.getheader("Connection", "").lower() == "close" and self.conn is not None:
            self.conn.close()
            self.conn = None
        return response.status, parsed, response

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()


def check(status: int, body: Any, expected: Expected) -> None:
    """The answer is the expected status, and an error has the contract's shape and code."""
    want_status, code = expected
    OUTCOMES[expected] += 1
    assert status == want_status, (status, body, expected)
    if code is None:
        assert isinstance(body, dict) and "data" in body, body
    else:
        assert isinstance(body, dict) and set(body) == {"error"}, body
        assert body["error"]["code"] == code, (body, expected)
        assert isinstance(body["error"]["message"], str) and "Traceback" not in str(body)


SERVER: ServerProcess | None = None


@pytest.fixture(scope="module")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    tmp = tmp_path_factory.mktemp("http_model")
    with ServerProcess(str(tmp / "model.db"), "--rate-limit", "0", log_path=tmp / "server.log") as srv:
        yield srv
        log = (tmp / "server.log").read_text()
        assert "Traceback" not in log, log[-3000:]


user_index = st.integers(0, USERS - 1)
text = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), min_size=1, max_size=12)
bad_user_ids = st.sampled_from(["", "has space", "tab\there", "x" * 129, "ctl\x07"])


class HttpModel(RuleBasedStateMachine):
    drafts = Bundle("drafts")

    def __init__(self) -> None:
        super().__init__()
        assert SERVER is not None
        self.client = Client(SERVER.port)
        tag = uuid.uuid4().hex[:10]
        self.users = [f"u{i}_{tag}" for i in range(USERS)]
        self.model: dict[str, ModelDraft] = {}
        self.segment_ids: dict[int, str] = {}  # id -> draft: ids are unique across the store

    def teardown(self) -> None:
        self.client.close()

    # -- helpers ------------------------------------------------------------------------------

    def draft_path(self, draft_id: str, tail: str = "") -> str:
        return f"/v1/collab/drafts/{draft_id}{tail}"

    def gate(self, draft_id: str, user: str) -> Expected | None:
        """404 / 403 for a mutation by ``user``, or None if the user may change the draft."""
        d = self.model.get(draft_id)
        if d is None:
            return (404, "not_found")
        if d.role(user) in (None, "viewer"):
            return (403, "forbidden")
        return None

    # -- rules --------------------------------------------------------------------------------

    @initialize(target=drafts)
    def missing_draft(self) -> str:
        return NO_DRAFT  # never created: every route must say 404 (or 400 for a bad request)

    @initialize(target=drafts, creator=user_index, title=text)
    def first_draft(self, creator: int, title: str) -> str:
        return self._create(self.users[creator], title)

    @precondition(lambda self: len(self.model) < MAX_DRAFTS)
    @rule(target=drafts, creator=user_index, title=text, description=st.none() | text)
    def create(self, creator: int, title: str, description: str | None) -> str:
        return self._create(self.users[creator], title, description)

    def _create(self, user: str, title: str, description: str | None = None) -> str:
        body: dict[str, Any] = {"title": title}
        if description is not None:
            body["description"] = description
        status, answer, response = self.client.request("POST", "/v1/collab/drafts", user, body)
        if not title.strip():
            check(status, answer, (422, "validation_error"))
            return NO_DRAFT
        check(status, answer, (201, None))
        state = answer["data"]
        draft_id = state["id"]
        assert response.getheader("Location") == self.draft_path(draft_id)
        d = ModelDraft(draft_id, user, title, description or "", holder=user, history=[user])
        self.model[draft_id] = d
        self.compare(d, state)
        return str(draft_id)

    @rule(draft=drafts, who=user_index, content=text, if_match=st.sampled_from([None, 0, -1]))
    def append(self, draft: str, who: int, content: str, if_match: int | None) -> None:
        self._append(draft, self.users[who], content, if_match)

    @rule(draft=drafts, content=text, if_match=st.sampled_from([None, None, 0, -1]))
    def holder_appends(self, draft: str, content: str, if_match: int | None) -> None:
        d = self.model.get(draft)
        self._append(draft, d.holder if d is not None else self.users[0], content, if_match)

    def _append(self, draft: str, user: str, content: str, if_match: int | None) -> None:
        d = self.model.get(draft)
        headers = {}
        if if_match is not None and d is not None:
            headers["If-Match"] = f'"{d.seq + if_match}"'
        status, answer, _ = self.client.request(
            "POST", self.draft_path(draft, "/segments"), user, {"content": content}, headers=headers
        )
        expected = self.gate(draft, user)
        if expected is None:
            assert d is not None
            if if_match == -1:
                expected = (412, "precondition_failed")
            elif d.holder != user:
                expected = (409, "not_ring_holder")
            else:
                expected = (201, None)
        check(status, answer, expected)
        if expected[0] == 201:
            assert d is not None
            d.segments.append((user, content))
            d.types.append("collab.segment_added")
            segment = answer["data"]["segment"]
            assert answer["data"]["seq"] == d.seq
            assert (segment["author_user_id"], segment["content"], segment["position"]) == (
                user, content, len(d.segments)
            )  # fmt: skip

    @rule(draft=drafts, who=user_index, to=user_index, if_match=st.sampled_from([None, 0, -1]))
    def pass_ring(self, draft: str, who: int, to: int, if_match: int | None) -> None:
        self._pass(draft, self.users[who], self.users[to], if_match)

    @rule(draft=drafts, to=user_index)
    def holder_passes(self, draft: str, to: int) -> None:
        d = self.model.get(draft)
        self._pass(draft, d.holder if d is not None else self.users[0], self.users[to], None)

    def _pass(self, draft: str, user: str, target: str, if_match: int | None) -> None:
        d = self.model.get(draft)
        headers = {}
        if if_match is not None and d is not None:
            headers["If-Match"] = f'"{d.seq + if_match}"'
        status, answer, _ = self.client.request(
            "POST", self.draft_path(draft, "/ring/pass"), user, {"to_user_id": target}, headers=headers
        )
        expected = self.gate(draft, user)
        if expected is None:
            assert d is not None
            if if_match == -1:
                expected = (412, "precondition_failed")
            elif d.holder != user:
                expected = (409, "not_ring_holder")
            elif target == user or d.role(target) not in ("creator", "contributor"):
                expected = (409, "invalid_ring_target")
            else:
                expected = (200, None)
        check(status, answer, expected)
        if expected[0] == 200:
            assert d is not None
            d.holder = target
            d.history.append(target)
            d.types.append("collab.ring_passed")
            assert answer["data"] == {
                "ring_state": {"current_holder_id": target, "holders_history": d.history},
                "seq": d.seq,
            }

    @rule(draft=drafts, who=user_index, whom=user_index, role=st.sampled_from(["contributor", "viewer"]))
    def add_collaborator(self, draft: str, who: int, whom: int, role: str) -> None:
        self._add(draft, self.users[who], self.users[whom], role)

    @rule(draft=drafts, whom=user_index, role=st.sampled_from(["contributor", "viewer"]))
    def creator_invites(self, draft: str, whom: int, role: str) -> None:
        d = self.model.get(draft)
        self._add(draft, d.creator if d is not None else self.users[0], self.users[whom], role)

    def _add(self, draft: str, user: str, added: str, role: str) -> None:
        status, answer, _ = self.client.request(
            "POST", self.draft_path(draft, "/collaborators"), user, {"user_id": added, "role": role}
        )
        expected = self.gate(draft, user)
        d = self.model.get(draft)
        if expected is None:
            assert d is not None
            expected = (409, "already_collaborator") if d.role(added) is not None else (201, None)
        check(status, answer, expected)
        if expected[0] == 201:
            assert d is not None
            d.roles[added] = role
            d.types.append("collab.collaborator_added")
            assert answer["data"]["seq"] == d.seq
            assert (answer["data"]["collaborator"]["user_id"], answer["data"]["collaborator"]["role"]) == (
                added, role
            )  # fmt: skip

    @rule(
        draft=drafts,
        who=user_index,
        title=st.none() | text | st.just("   "),
        description=st.none() | st.just("") | text,
    )
    def patch(self, draft: str, who: int, title: str | None, description: str | None) -> None:
        user = self.users[who]
        body = {k: v for k, v in (("title", title), ("description", description)) if v is not None}
        status, answer, _ = self.client.request("PATCH", self.draft_path(draft), user, body)
        expected = self.gate(draft, user)
        d = self.model.get(draft)
        if expected is None:
            valid = bool(body) and (title is None or bool(title.strip()))
            expected = (200, None) if valid else (422, "validation_error")
        check(status, answer, expected)
        if expected[0] == 200:
            assert d is not None
            changed = (title is not None and title != d.title) or (
                description is not None and description != d.description
            )
            d.title = title if title is not None else d.title
            d.description = description if description is not None else d.description
            if changed:
                d.types.append("collab.draft_updated")
            self.compare(d, answer["data"])

    @rule(draft=drafts, content=text, other=user_index)
    def idempotent_append(self, draft: str, content: str, other: int) -> None:
        """The holder appends with an Idempotency-Key, retries it, then reuses it wrongly."""
        d = self.model.get(draft)
        user = d.holder if d is not None else self.users[0]
        key = {"Idempotency-Key": "k-" + uuid.uuid4().hex}
        path = self.draft_path(draft, "/segments")
        status, first, _ = self.client.request("POST", path, user, {"content": content}, headers=key)
        if d is None:
            check(status, first, (404, "not_found"))
            return
        check(status, first, (201, None))
        d.segments.append((user, content))
        d.types.append("collab.segment_added")
        assert first["data"]["seq"] == d.seq
        status, again, response = self.client.request("POST", path, user, {"content": content}, headers=key)
        check(status, again, (201, None))
        assert again == first and response.getheader("Idempotent-Replayed") == "true"
        status, reused, _ = self.client.request("POST", path, user, {"content": content + "!"}, headers=key)
        check(status, reused, (422, "idempotency_key_reused"))
        # a key belongs to one user: another user's request with it is a request of its own
        stranger = self.users[other]
        if stranger == user:
            return  # the same user, key and body: the retry above
        status, answer, _ = self.client.request("POST", path, stranger, {"content": content}, headers=key)
        gate = self.gate(draft, stranger)
        check(status, answer, gate or ((201, None) if stranger == d.holder else (409, "not_ring_holder")))
        if status == 201:
            d.segments.append((stranger, content))
            d.types.append("collab.segment_added")

    @rule(draft=drafts, who=user_index)
    def get_state(self, draft: str, who: int) -> None:
        user = self.users[who]
        status, answer, response = self.client.request("GET", self.draft_path(draft), user)
        d = self.model.get(draft)
        if d is None:
            check(status, answer, (404, "not_found"))
        elif d.role(user) is None:
            check(status, answer, (403, "forbidden"))
        else:
            check(status, answer, (200, None))
            self.compare(d, answer["data"])
            etag = response.getheader("ETag")
            assert etag == f'"{d.seq}"'
            status, _, _ = self.client.request(
                "GET", self.draft_path(draft), user, headers={"If-None-Match": etag}
            )
            assert status == 304

    @rule(draft=drafts, who=user_index, since=st.integers(0, 12), limit=st.none() | st.integers(1, 5))
    def get_events(self, draft: str, who: int, since: int, limit: int | None) -> None:
        user = self.users[who]
        query = f"?since={since}" + (f"&limit={limit}" if limit is not None else "")
        status, answer, _ = self.client.request("GET", self.draft_path(draft, "/events" + query), user)
        d = self.model.get(draft)
        if d is None:
            check(status, answer, (404, "not_found"))
        elif d.role(user) is None:
            check(status, answer, (403, "forbidden"))
        else:
            check(status, answer, (200, None))
            end = d.seq if limit is None else min(d.seq, since + limit)
            assert answer["head_seq"] == d.seq
            assert [e["seq"] for e in answer["data"]] == list(range(since + 1, end + 1))
            assert [e["type"] for e in answer["data"]] == d.types[since:end]
            assert all(e["draft_id"] == draft for e in answer["data"])

    @rule(
        draft=drafts,
        who=user_index,
        query=st.sampled_from(["since=-1", "since=abc", "since=", "limit=0", "limit=1001", "since=1.5",
                               f"since={2**62 + 1}", "wait=31", "wait=-1", "limit=x"]),
    )  # fmt: skip
    def bad_events_query(self, draft: str, who: int, query: str) -> None:
        status, answer, _ = self.client.request(
            "GET", self.draft_path(draft, "/events?" + query), self.users[who]
        )
        check(status, answer, (400, "invalid_parameter"))

    @rule(
        draft=drafts,
        who=user_index,
        endpoint=st.sampled_from(["create", "patch", "segment", "ring", "collaborator"]),
        kind=st.sampled_from(
            [
                "invalid_json",
                "content_type",
                "not_object",
                "wrong_type",
                "unknown_field",
                "missing",
                "empty",
                "too_long",
                "bad_user_id",
            ]
        ),
        bad_id=bad_user_ids,
    )
    def malformed(self, draft: str, who: int, endpoint: str, kind: str, bad_id: str) -> None:
        user = self.users[who]
        method, path = {
            "create": ("POST", "/v1/collab/drafts"),
            "patch": ("PATCH", self.draft_path(draft)),
            "segment": ("POST", self.draft_path(draft, "/segments")),
            "ring": ("POST", self.draft_path(draft, "/ring/pass")),
            "collaborator": ("POST", self.draft_path(draft, "/collaborators")),
        }[endpoint]
        good: dict[str, Any] = {
            "create": {"title": "t"},
            "patch": {"title": "t"},
            "segment": {"content": "c"},
            "ring": {"to_user_id": self.users[(who + 1) % USERS]},
            "collaborator": {"user_id": self.users[(who + 1) % USERS], "role": "viewer"},
        }[endpoint]
        first = next(iter(good))
        # schema-level faults are refused before the draft is looked at; domain limits after 404/403
        gate = None if endpoint == "create" else self.gate(draft, user)
        domain: Expected = gate or (422, "validation_error")
        raw: bytes | None = None
        expected: Expected
        content_type = "application/json"
        body: Any = None
        if kind == "invalid_json":
            raw, expected = b'{"title": "t",', (400, "invalid_json")
        elif kind == "content_type":
            raw, content_type, expected = orjson.dumps(good), "text/plain", (415, "unsupported_media_type")
        elif kind == "not_object":
            body, expected = [good], (422, "validation_error")
        elif kind == "wrong_type":
            body, expected = {**good, first: 5}, (422, "validation_error")
        elif kind == "unknown_field":
            body, expected = {**good, "bogus": 1}, (422, "validation_error")
        elif kind == "missing":
            body = {}
            expected = domain if endpoint == "patch" else (422, "validation_error")
        elif kind == "empty":
            body, expected = {**good, first: ""}, (422, "validation_error")
        elif kind == "too_long":
            limit = {"create": 200, "patch": 200, "segment": 10_000, "ring": 128, "collaborator": 128}
            body, expected = {**good, first: "x" * (limit[endpoint] + 1)}, domain
        else:  # bad_user_id: a schema-valid string the domain refuses
            if endpoint in ("ring", "collaborator"):
                expected = (422, "validation_error") if bad_id == "" else domain
                body = {**good, first: bad_id}
            else:
                body, expected = {**good, first: "   "}, domain  # blank title / whitespace content
                if endpoint == "segment":
                    # whitespace content is a valid segment: only the holder may append it
                    d = self.model.get(draft)
                    expected = gate or (
                        (409, "not_ring_holder") if d is not None and d.holder != user else (201, None)
                    )
        status, answer, _ = self.client.request(method, path, user, body, raw=raw, content_type=content_type)
        check(status, answer, expected)
        if expected[0] == 201:
            d = self.model[draft]
            d.segments.append((user, "   "))
            d.types.append("collab.segment_added")

    # -- the server's state is the model's -----------------------------------------------------

    def compare(self, d: ModelDraft, state: dict[str, Any]) -> None:
        assert state["id"] == d.id
        assert (state["title"], state["description"], state["creator_id"]) == (
            d.title,
            d.description,
            d.creator,
        )
        assert [(c["user_id"], c["role"]) for c in state["collaborators"]] == list(d.roles.items())
        assert state["ring_state"] == {"current_holder_id": d.holder, "holders_history": d.history}
        segments = state["segments"]
        assert [(s["author_user_id"], s["content"]) for s in segments] == d.segments
        assert [s["position"] for s in segments] == list(range(1, len(segments) + 1))
        ids = [s["id"] for s in segments]
        assert ids == sorted(set(ids)), "segment ids unique and increasing"
        for sid in ids:
            assert self.segment_ids.setdefault(sid, d.id) == d.id, "segment id reused across drafts"
        assert state["seq"] == d.seq

    @invariant()
    def server_state_is_the_model(self) -> None:
        for d in self.model.values():
            status, answer, _ = self.client.request("GET", self.draft_path(d.id), d.creator)
            check(status, answer, (200, None))
            self.compare(d, answer["data"])


def test_http_api_matches_the_model(live_server: ServerProcess) -> None:
    global SERVER
    SERVER = live_server
    run_state_machine_as_test(
        HttpModel,
        settings=settings(
            max_examples=EXAMPLES,
            stateful_step_count=30,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        ),
    )
    print(sorted(OUTCOMES.items(), key=lambda kv: -kv[1]))
    # the run did exercise the API: successes of each kind and most of the error answers
    assert OUTCOMES[(201, None)] and OUTCOMES[(200, None)] and OUTCOMES[(404, "not_found")], OUTCOMES
    assert len(OUTCOMES) >= 8, OUTCOMES
