"""Kind: credentials the client would send altered — checked before anything is sent.

``ringlog tail --user-id $'al\\xffice'`` sent ``X-User-Id: alice`` (the undecodable byte was
dropped on the way), and so did ``DraftStream(url, d, user_id="al\\udcffice")``: the caller acted
as another user. A control character in ``--user-id`` or ``--token`` ended in aiohttp's
traceback; ``a\\x7fb`` in a token ended silently with status 1; ``http://user:pw@host`` printed
the password and sent Basic auth. Now the client (``ringlog.rest.auth_headers``, used by
``RinglogClient``, ``DraftStream`` and ``tail``) applies the server's one user-id rule and RFC
6750 §2.1's ``b64token`` grammar to tokens, and ``ringlog.urls.base_url`` refuses userinfo:
``ValueError`` at construction, a one-line usage error with exit status 2 on the command line.
"""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from projections.decide import valid_user_id
from ringlog import DraftStream, RinglogClient
from ringlog.rest import B64TOKEN, auth_headers, format_wait
from server.params import parse_number
from tests.hardening.cliproc import ringlog

URL = "http://127.0.0.1:8000"
BAD_USER_IDS = [
    "al\udcffice",
    "a\x01b",
    "a\x7fb",
    "a b",
    "al\u200bice",
    "\u202eecila",
    "\ufeffalice",
    "a\ufffe",
    "x" * 129,
]
BAD_TOKENS = ["a\nb", "a\x7fb", "a b", "a\x00b", "tök", "a\udcffb", "=abc", "a=b", "Bearer x", "a,b"]
TOKEN_TEXT = st.one_of(
    st.text(max_size=30),
    st.text(alphabet=st.characters(codec="ascii"), min_size=1, max_size=30),
    st.sampled_from([*BAD_TOKENS, "eyJhbGciOi.eyJzdWIi.sig-_", "abc==", "a+/~.-_"]),
)


@given(user_id=st.one_of(st.text(min_size=1, max_size=140), st.sampled_from(BAD_USER_IDS)))
def test_the_client_applies_the_server_user_id_rule(user_id: str) -> None:
    if valid_user_id(user_id):
        assert auth_headers(None, user_id) == {"X-User-Id": user_id}
        DraftStream(URL, "d", user_id=user_id)
        RinglogClient(URL, user_id=user_id)
    else:
        for make in (
            lambda: auth_headers(None, user_id),
            lambda: DraftStream(URL, "d", user_id=user_id),
            lambda: RinglogClient(URL, user_id=user_id),
            lambda: DraftStream(URL, "d", token="abc", user_id=user_id),  # given, so judged
        ):
            with pytest.raises(ValueError, match="user id"):
                make()


@given(token=TOKEN_TEXT)
def test_tokens_must_be_rfc6750_b64tokens(token: str) -> None:
    if not token:
        return  # no token: the user id (or nothing) decides
    good = re.fullmatch(r"[A-Za-z0-9\-._~+/]+=*", token) is not None
    assert (B64TOKEN.fullmatch(token) is not None) == good
    if good:
        assert auth_headers(token, None) == {"Authorization": f"Bearer {token}"}
        DraftStream(URL, "d", token=token)
    else:
        with pytest.raises(ValueError, match="RFC 6750") as e:
            DraftStream(URL, "d", token=token)
        assert token not in str(e.value) or len(token) < 2  # the secret is not echoed
        with pytest.raises(ValueError, match="RFC 6750"):
            RinglogClient(URL, token=token)


@pytest.mark.parametrize("url", ["http://user:pw@127.0.0.1:8000", "http://u@h", "https://:pw@h:1/x"])
def test_urls_with_userinfo_are_refused(url: str) -> None:
    for make in (lambda: DraftStream(url, "d", user_id="alice"), lambda: RinglogClient(url, user_id="alice")):
        with pytest.raises(ValueError, match="--token or --user-id") as e:
            make()
        assert "pw" not in str(e.value)


@given(seconds=st.floats(min_value=0, max_value=30, allow_nan=False))
def test_the_client_writes_wait_as_the_server_reads_it(seconds: float) -> None:
    text = format_wait(seconds)
    assert "e" not in text and "E" not in text
    assert abs(parse_number(text, "wait", 0, 30) - seconds) <= 5e-7


@pytest.mark.parametrize(
    "flags",
    [
        ["--user-id", "al\udcffice"],
        ["--user-id", "a\x01b"],
        ["--user-id", "al\u200bice"],
        ["--token", "a\nb"],
        ["--token", "a\x7fb"],
        ["--token", "a b"],
        ["--user-id", "alice", "--url", "http://user:secretpw@127.0.0.1:1"],
    ],
)
def test_tail_refuses_altered_credentials_in_one_line(flags: list[str]) -> None:
    args = ["tail", "--draft", "d", *flags]
    if "--url" not in flags:
        args += ["--url", "http://127.0.0.1:1"]
    out = ringlog(
        *[a.encode("utf-8", "surrogateescape").decode("utf-8", "surrogateescape") for a in args], timeout=30
    )
    err = out.stderr.decode("utf-8", "replace")
    assert out.returncode == 2, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert err.startswith("ringlog tail: --") and "secretpw" not in err, err
