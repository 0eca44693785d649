"""One blank rule for titles, one character rule for user ids: ``/openapi.json``'s ``pattern`` and the server's refusal agree on
every code point (schemathesis sent ``{"title": "\\t"}``, which the schema allowed and the server
refused). And lengths count code points on both sides: astral-plane characters are one each.
"""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from projections.decide import WHITESPACE, CreateDraft, decide, is_blank, valid_user_id
from projections.errors import ValidationFailed
from server.openapi import NOT_BLANK_PATTERN, USER_ID_PATTERN, openapi_document
from server.settings import Settings
from tests.server.inprocess import running_app

SCHEMA_SAYS_NOT_BLANK = re.compile(NOT_BLANK_PATTERN)
SCALARS = [chr(c) for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF]


def refused(title: str) -> bool:
    try:
        decide(None, CreateDraft("alice", "draft_" + "0" * 20, title), "t")
    except ValidationFailed:
        return True
    return False


def test_the_whitespace_set_is_python_s() -> None:
    assert {ch for ch in SCALARS if ch.isspace()} == WHITESPACE


def test_pattern_and_rule_agree_on_every_code_point() -> None:
    schema_blank = {ch for ch in SCALARS if SCHEMA_SAYS_NOT_BLANK.search(ch) is None}
    assert schema_blank == WHITESPACE == {ch for ch in SCALARS if is_blank(ch)}
    for ch in (*sorted(WHITESPACE), "\ufeff", "\u200b", "\u180e", "x", "\U0001f600"):
        assert refused(ch) is (SCHEMA_SAYS_NOT_BLANK.search(ch) is None), repr(ch)


@settings(max_examples=300)
@given(
    st.text(
        alphabet=st.sampled_from([*sorted(WHITESPACE), "a", "\ufeff", "\U0001f600"]), min_size=1, max_size=8
    )
)
def test_pattern_and_rule_agree_on_mixed_titles(title: str) -> None:
    assert refused(title) is (SCHEMA_SAYS_NOT_BLANK.search(title) is None)


def test_both_title_schemas_carry_the_pattern() -> None:
    schemas = openapi_document(Settings(db="memory:"))["components"]["schemas"]
    assert schemas["CreateDraftBody"]["properties"]["title"]["pattern"] == NOT_BLANK_PATTERN
    assert schemas["UpdateDraftBody"]["properties"]["title"]["anyOf"][0]["pattern"] == NOT_BLANK_PATTERN


@pytest.mark.parametrize("title", ["\t", " ", "\u3000\u2028", "\x1c", "\x85"])
async def test_blank_titles_are_422_on_both_endpoints(title: str) -> None:
    async with running_app() as srv:
        status, body, _ = await srv.call("POST", "/v1/collab/drafts", "alice", {"title": title})
        assert (status, body["error"]["code"]) == (422, "validation_error")
        d = await srv.create()
        status, body, _ = await srv.call("PATCH", f"/v1/collab/drafts/{d}", "alice", {"title": title})
        assert (status, body["error"]["code"]) == (422, "validation_error")


@pytest.mark.parametrize("title", ["\ufeff", "\u200b", "\t.\t"])
async def test_what_the_pattern_allows_is_accepted(title: str) -> None:
    async with running_app() as srv:
        status, _, _ = await srv.call("POST", "/v1/collab/drafts", "alice", {"title": title})
        assert status == 201


@pytest.mark.parametrize("char", ["\U0001f600", "\U00010000", "\U0010fffd", "é"])
async def test_lengths_count_code_points_like_the_schema(char: str) -> None:
    """JSON Schema's maxLength counts characters (code points), as Python's len does."""
    async with running_app(title_max=5, content_max=7) as srv:
        doc = (await srv.call("GET", "/openapi.json", None))[1]
        schemas = doc["components"]["schemas"]
        assert schemas["CreateDraftBody"]["properties"]["title"]["maxLength"] == 5
        assert schemas["AppendSegmentBody"]["properties"]["content"]["maxLength"] == 7
        assert (await srv.call("POST", "/v1/collab/drafts", "alice", {"title": char * 5}))[0] == 201
        assert (await srv.call("POST", "/v1/collab/drafts", "alice", {"title": char * 6}))[0] == 422
        d = await srv.create()
        assert (await srv.append(d, char * 7))[0] == 201
        assert (await srv.append(d, char * 8))[0] == 422


def test_user_id_pattern_and_rule_agree_on_every_code_point() -> None:
    """The schema of ids in bodies and paths and valid_user_id: one set of characters (U+FEFF,
    a format character, is refused by both since invisible characters were refused)."""
    pattern = re.compile(USER_ID_PATTERN)
    assert {ch for ch in SCALARS if pattern.search(ch)} == {ch for ch in SCALARS if valid_user_id(ch)}
    assert not valid_user_id("\ufeff") and not pattern.search("\ufeff")


@pytest.mark.parametrize(
    ("target", "status", "error"),
    [
        ("%C3%A9", 409, "not_collaborator"),
        ("%E2%80%8Bx", 422, "validation_error"),
        ("%C2%A0", 422, "validation_error"),
    ],
)
async def test_ids_in_the_path_follow_the_same_rule(target: str, status: int, error: str) -> None:
    async with running_app() as srv:
        d = await srv.create()
        reply = await srv.call("DELETE", f"/v1/collab/drafts/{d}/collaborators/{target}", "alice")
        assert (reply[0], reply[1]["error"]["code"]) == (status, error)
