"""Kind 1, integers from the outside world: one parser, the same answer on every channel.

Every integer-like string (ASCII and every Unicode ``Nd`` digit, superscripts, signs, ``_``,
spaces, floats, exponents, leading zeros, 2**62/2**63 neighbours, 5,000 digits) is tried on every
numeric input: ``since``/``limit``/``wait`` on ``/events``, ``If-Match`` on a mutation, the
WebSocket's ``since``, the command line's integer flags and the ``RINGLOG_*`` integers. Accepted
exactly when the string is 1–19 ASCII digits in range, with the value ``int()`` gives; otherwise
400 ``invalid_parameter`` / ``invalid_since`` + 4400 / exit 2 with one line.
"""

from __future__ import annotations

import contextlib
import io
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from server.cli import build_parser
from server.openapi import openapi_document
from server.params import (
    DECIMAL_PATTERN,
    MAX_NUMBER_CHARS,
    MAX_SEQ,
    ParameterError,
    parse_entity_tag_seq,
    parse_int,
    parse_number,
)
from server.settings import Settings
from tests.hardening.kit import (
    EXAMPLES,
    FEW_EXAMPLES,
    INTEGER_LIKE,
    app_client,
    ascii_int_in,
    create_draft,
    header_safe,
    socket_outcome,
)
from tests.serverproc import ServerProcess

# -- the parser itself ---------------------------------------------------------------------------


@settings(max_examples=3000)
@given(raw=INTEGER_LIKE, low=st.sampled_from([0, 1]), high=st.sampled_from([1000, 65535, MAX_SEQ]))
def test_parse_int_accepts_exactly_ascii_digits_in_range(raw: str, low: int, high: int) -> None:
    try:
        value = parse_int(raw, "n", low, high)
    except ParameterError as e:
        assert not ascii_int_in(raw, low, high), raw
        assert e.message == f"n must be 1–19 ASCII digits, from {low} to {high}"
        assert "\n" not in e.message
    else:
        assert ascii_int_in(raw, low, high), raw
        assert value == int(raw)


@pytest.mark.parametrize(
    "raw", ["\u00b2", "\u0663", "1_0", "+3", "-3", " 3", "3\n", "0x1", "1e3", "1.0", "", "9" * 5000]
)
def test_the_examples_of_the_issue_are_refused(raw: str) -> None:
    with pytest.raises(ParameterError):
        parse_int(raw)


@settings(max_examples=2000)
@given(raw=st.one_of(INTEGER_LIKE, st.floats(min_value=0, max_value=100).map(repr)))
def test_parse_number_takes_only_ascii_decimal_text(raw: str) -> None:
    try:
        value = parse_number(raw, "wait", 0, 30)
    except ParameterError:
        assert not (
            re.fullmatch(r"([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]{1,3})?", raw)
            and len(raw) <= 32
            and 0 <= float(raw) <= 30
        )
    else:
        mantissa = re.sub(r"[eE][+-]?", "e", raw)  # a sign is allowed only in the exponent
        assert raw.isascii() and not set(mantissa) & set("+-_ \t\n"), raw
        assert re.fullmatch(r"[0-9.]", raw[0])
        assert value == float(raw)
        assert 0 <= value <= 30


_PATCH = openapi_document(Settings())["paths"]["/v1/collab/drafts/{draft_id}"]["patch"]["parameters"]
IF_MATCH_PATTERN = next(p for p in _PATCH if p["name"] == "If-Match")["schema"]["pattern"]


@settings(max_examples=1500)
@given(
    raw=st.one_of(INTEGER_LIKE, st.integers(0, 2**64).map(str), st.text(alphabet="0123456789", max_size=21))
)
def test_openapi_if_match_pattern_says_exactly_what_the_server_accepts(raw: str) -> None:
    body = IF_MATCH_PATTERN.removeprefix("^").removesuffix("$")  # Python's $ also matches before \n
    for value in (raw, f'"{raw}"'):
        if value != value.strip(" \t"):
            continue  # HTTP removes optional whitespace around a field value before anyone sees it
        try:
            parse_entity_tag_seq(value)
            accepted = True
        except ParameterError:
            accepted = False
        assert accepted == (re.fullmatch(body, value) is not None), value


def test_openapi_since_bound_is_the_parsers() -> None:
    params = openapi_document(Settings())["paths"]["/v1/collab/drafts/{draft_id}/events"]["get"]["parameters"]
    since = next(p for p in params if p["name"] == "since")["schema"]
    assert since["maximum"] == MAX_SEQ < 2**63 - 1  # both stores hold it (signed 64-bit)
    assert str(MAX_SEQ) in Path("docs/API.md").read_text()


# -- REST ------------------------------------------------------------------------------------------


@pytest.fixture
async def rest():
    async with app_client() as client:
        draft_id, head = await create_draft(client, segments=2)
        yield client, draft_id, head


@EXAMPLES
@given(raw=INTEGER_LIKE, name=st.sampled_from(["since", "limit"]))
async def test_events_query_integers(rest, raw: str, name: str) -> None:
    client, draft_id, head = rest
    r = await client.get(
        f"/v1/collab/drafts/{draft_id}/events", params={name: raw}, headers={"X-User-Id": "alice"}
    )
    body = await r.json()
    low, high = (0, MAX_SEQ) if name == "since" else (1, 1000)
    if ascii_int_in(raw, low, high):
        assert r.status == 200, body
        seqs = [e["seq"] for e in body["data"]]
        if name == "since":
            assert seqs == list(range(int(raw) + 1, head + 1))
        else:
            assert seqs == list(range(1, min(head, int(raw)) + 1))
    else:
        assert r.status == 400, (raw, body)
        assert body["error"]["code"] == "invalid_parameter"
        assert name in body["error"]["message"]


@EXAMPLES
@given(raw=INTEGER_LIKE, name=st.sampled_from(["after", "limit"]))
async def test_feed_query_integers(rest, raw: str, name: str) -> None:
    """``/v1/me/events`` reads ``after`` and ``limit`` with the same parser and bounds as ``/events``."""
    client, _, _ = rest
    r = await client.get("/v1/me/events", params={name: raw}, headers={"X-User-Id": "alice"})
    body = await r.json()
    low, high = (0, MAX_SEQ) if name == "after" else (1, 1000)
    if ascii_int_in(raw, low, high):
        assert r.status == 200, body
        positions = [row["position"] for row in body["data"]]
        if name == "after":
            assert positions == ([1] if int(raw) == 0 else [])  # alice's feed: her draft's creation
        else:
            assert positions == [1]
    else:
        assert r.status == 400, (raw, body)
        assert body["error"]["code"] == "invalid_parameter"
        assert name in body["error"]["message"]


@EXAMPLES
@given(raw=st.one_of(INTEGER_LIKE, st.floats(min_value=0, max_value=40).map(repr)))
async def test_events_wait_is_the_number_parser(rest, raw: str) -> None:
    client, draft_id, _ = rest
    # since=0 with events present answers at once whatever the wait
    r = await client.get(
        f"/v1/collab/drafts/{draft_id}/events",
        params={"since": "0", "wait": raw},
        headers={"X-User-Id": "alice"},
    )
    body = await r.json()
    try:
        parse_number(raw, "wait", 0, 30)
        expected = 200
    except ParameterError:
        expected = 400
    assert r.status == expected, (raw, body)
    if expected == 400:
        assert body["error"]["code"] == "invalid_parameter"


@EXAMPLES
@given(raw=INTEGER_LIKE, quoted=st.booleans())
async def test_if_match_header(rest, raw: str, quoted: bool) -> None:
    client, draft_id, head = rest
    value = f'"{raw}"' if quoted else raw
    if not header_safe(value) or value != value.strip(" \t"):
        return  # HTTP strips optional whitespace around a field value (RFC 9110 §5.5)
    r = await client.patch(
        f"/v1/collab/drafts/{draft_id}",
        json={"title": "T"},  # unchanged: nothing is appended when If-Match holds
        headers={"X-User-Id": "alice", "If-Match": value},
    )
    body = await r.json()
    if ascii_int_in(raw, 0, MAX_SEQ):
        assert r.status == (200 if int(raw) == head else 412), body
    else:
        assert r.status == 400, (value, body)
        assert body["error"]["code"] == "invalid_parameter"


# -- WebSocket -------------------------------------------------------------------------------------


@FEW_EXAMPLES
@given(raw=INTEGER_LIKE)
async def test_websocket_since(rest, raw: str) -> None:
    client, draft_id, head = rest
    kind, detail = await socket_outcome(
        client, f"/v1/ws/drafts/{draft_id}", params={"since": raw, "user_id": "alice"}
    )
    if ascii_int_in(raw, 0, head):
        assert kind == "connected", (raw, detail)
        assert detail["head_seq"] == head
    else:
        assert (kind, detail) == ("refused", ("invalid_since", 4400)), raw


@pytest.mark.parametrize("raw", ["1_0", "+3", "\u0663", "\u00b2", " 1", "1 ", "-0", "1.0"])
async def test_websocket_examples_of_the_issue(rest, raw: str) -> None:
    client, draft_id, _ = rest
    kind, detail = await socket_outcome(
        client, f"/v1/ws/drafts/{draft_id}", params={"since": raw, "user_id": "alice"}
    )
    assert (kind, detail) == ("refused", ("invalid_since", 4400))


# -- command line and environment ---------------------------------------------------------------

INT_FLAGS = [
    (["replay", "--db", "x", "--draft", "d"], "--until-seq", "until_seq", 1, MAX_SEQ),
    (["log", "--db", "x", "--draft", "d"], "--since", "since", 0, MAX_SEQ),
    (["tail", "--url", "http://127.0.0.1:1", "--draft", "d"], "--since", "since", 0, MAX_SEQ),
    (["serve"], "--port", "port", 0, 65535),
    (["serve"], "--pool-size", "pool_size", 1, 1000),
    (["serve"], "--max-sockets-per-user", "max_sockets_per_user", 0, 1_000_000),
    (["serve"], "--max-subscriptions-per-socket", "max_subscriptions_per_socket", 1, 1_000_000),
    (["serve"], "--ws-flood-limit", "ws_flood_limit", 0, 1_000_000),
    (["serve"], "--ws-queue-size", "ws_queue_size", 1, 10_000_000),
    (["serve"], "--title-max", "title_max", 1, 1_000_000),
    (["serve"], "--description-max", "description_max", 0, 1_000_000),
    (["serve"], "--content-max", "content_max", 1, 1_000_000),
    (["serve"], "--user-id-max", "user_id_max", 1, 1024),
]


@settings(max_examples=400)
@given(raw=INTEGER_LIKE, case=st.sampled_from(INT_FLAGS))
def test_every_integer_flag(raw: str, case) -> None:
    prefix, flag, dest, low, high = case
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr):
            args = build_parser().parse_args([*prefix, f"{flag}={raw}"])
    except SystemExit as e:
        assert e.code == 2
        err = stderr.getvalue()
        assert not ascii_int_in(raw, low, high), raw
        assert (
            err.count("\n") == 1
            and f"argument {flag}: must be 1–19 ASCII digits, from {low} to {high}" in err
        )
        assert "Traceback" not in err
    else:
        assert ascii_int_in(raw, low, high), raw
        assert getattr(args, dest) == int(raw)


@settings(max_examples=300)
@given(raw=INTEGER_LIKE, case=st.sampled_from([c for c in INT_FLAGS if c[0] == ["serve"]]))
def test_every_integer_variable_follows_the_flags_rule(raw: str, case) -> None:
    from server.settings import SettingError, settings_from

    _, flag, dest, low, high = case
    env = {"RINGLOG_" + dest.upper(): raw}
    if "\x00" in raw:
        return  # an environment cannot hold NUL
    try:
        value = getattr(settings_from(None, env), dest)
    except SettingError as e:
        assert not ascii_int_in(raw, low, high), raw
        assert (
            str(e) == f"{flag} (from RINGLOG_{dest.upper()}): must be 1–19 ASCII digits, from {low} to {high}"
        )
    else:
        assert ascii_int_in(raw, low, high), raw
        assert value == int(raw)


# -- end to end: one real server and the real console script -------------------------------------


def _ringlog(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "server.cli", *args], capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize(
    "args",
    [
        ["replay", "--db", "x.db", "--draft", "d", "--until-seq", "99999999999999999999999"],
        ["replay", "--db", "x.db", "--draft", "d", "--until-seq", "0"],
        ["log", "--db", "x.db", "--draft", "d", "--since", "-3"],
        ["log", "--db", "x.db", "--draft", "d", "--since", "\u0663"],
        ["tail", "--url", "http://127.0.0.1:1", "--draft", "d", "--since", "1_0"],
    ],
)
def test_cli_integer_flags_end_to_end(args: list[str], tmp_path: Path) -> None:
    run = _ringlog(*args)
    assert run.returncode == 2, run
    assert "Traceback" not in run.stderr
    assert run.stderr.count("\n") == 1, run.stderr
    assert "must be 1–19 ASCII digits, from" in run.stderr


async def test_a_real_server_answers_400_and_4400(tmp_path: Path) -> None:
    import aiohttp

    with ServerProcess(str(tmp_path / "e2e.db"), "--dev-auth", "--rate-limit", "0") as srv:
        async with aiohttp.ClientSession() as http:
            r = await http.post(
                f"{srv.url}/v1/collab/drafts", json={"title": "T"}, headers={"X-User-Id": "alice"}
            )
            draft_id = (await r.json())["data"]["id"]
            for raw in ["\u00b2", "\u0663", "1_0", "+3", str(2**63)]:
                r = await http.get(
                    f"{srv.url}/v1/collab/drafts/{draft_id}/events",
                    params={"since": raw},
                    headers={"X-User-Id": "alice"},
                )
                assert r.status == 400, raw
                assert (await r.json())["error"]["code"] == "invalid_parameter"
            for raw in ["1_0", "+1", "\u0663"]:
                async with http.ws_connect(
                    f"{srv.ws_url}/v1/ws/drafts/{draft_id}", params={"since": raw, "user_id": "alice"}
                ) as ws:
                    assert (await ws.receive_json(timeout=10))["code"] == "invalid_since"
                    await ws.receive(timeout=10)
                    assert ws.close_code == 4400


# -- the messages state the rule; wait has one rule ------------------------------------------------


@pytest.mark.parametrize("raw", ["0" * 30 + "1", "0" * 19 + "7", "1" * 20, "01x"])
async def test_a_refused_since_is_told_the_real_rule(rest, raw: str) -> None:
    client, draft_id, _ = rest
    r = await client.get(f"/v1/collab/drafts/{draft_id}/events?since={raw}", headers={"X-User-Id": "alice"})
    body = await r.json()
    assert (r.status, body["error"]["code"]) == (400, "invalid_parameter")
    assert "1–19 ASCII digits" in body["error"]["message"], body


@pytest.mark.parametrize("raw", ["5", "0.5", ".5", "5.", "1e1", "1e-05", "30", "30.000"])
async def test_every_documented_form_of_wait_is_accepted(rest, raw: str) -> None:
    client, draft_id, _ = rest
    r = await client.get(
        f"/v1/collab/drafts/{draft_id}/events",
        params={"since": "0", "wait": raw},
        headers={"X-User-Id": "alice"},
    )
    assert r.status == 200, (raw, await r.text())


@pytest.mark.parametrize(
    "raw", [".", "5..", "..5", "-.5", "+5", "5e", "e5", ".e1", "0x1", "5 ", "inf", "30.1"]
)
def test_malformed_waits_are_refused_with_the_form_named(raw: str) -> None:
    with pytest.raises(ParameterError, match="optional decimal point"):
        parse_number(raw, "wait", 0, 30)


@settings(max_examples=2000)
@given(
    raw=st.one_of(
        st.from_regex(DECIMAL_PATTERN, fullmatch=True),
        INTEGER_LIKE,
        st.text(alphabet="0123456789.eE+-", max_size=8),
    )
)
def test_the_documented_pattern_and_the_parser_agree(raw: str) -> None:
    matches = re.fullmatch(DECIMAL_PATTERN, raw) is not None and len(raw) <= MAX_NUMBER_CHARS
    try:
        value = parse_number(raw, "wait", 0, 1e300)
    except ParameterError:
        assert not matches or not math.isfinite(float(raw)) or float(raw) > 1e300, raw
    else:
        assert matches and value == float(raw), raw


@pytest.mark.parametrize("case", INT_FLAGS, ids=lambda c: f"{' '.join(c[0])} {c[1]}")
def test_a_double_dash_value_is_refused_not_dropped(case) -> None:
    """Python 3.11's argparse drops ``--`` from ``--flag=--``; the flag then parsed to ``[]``."""
    prefix, flag, _dest, low, high = case
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr), pytest.raises(SystemExit) as e:
        build_parser().parse_args([*prefix, f"{flag}=--"])
    assert e.value.code == 2
    assert f"argument {flag}: must be 1–19 ASCII digits, from {low} to {high}" in stderr.getvalue()
