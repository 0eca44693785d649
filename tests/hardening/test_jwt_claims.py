"""Kind 4, numeric claims out of range: ``exp``/``nbf``/``iat`` of any JSON type → 401, never 500.

Validly signed tokens (HS256 with the secret, RS256 and ES256 from a JWKS served in-process)
carry every kind of claim value: huge integers (10^400), floats, ``NaN``/``Infinity`` (Python's
JSON encoder writes them and its decoder reads them back), negatives, booleans, strings, null,
arrays. REST and the WebSocket must agree with :func:`server.auth.token_valid_until`: accepted
exactly when it accepts, else 401 ``unauthorized`` / ``unauthorized`` + 1008.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

import jwt
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from hypothesis import event, given
from hypothesis import strategies as st

from server.auth import MAX_NUMERIC_DATE, ClaimError, token_valid_until
from tests.hardening.kit import EXAMPLES, FEW_EXAMPLES, app_client, create_draft, socket_outcome
from tests.serverproc import TEST_SECRET, ServerProcess

LEEWAY = 30.0

CLAIM_VALUE = st.one_of(
    st.integers(min_value=-(10**30), max_value=10**30),
    st.just(10**400),
    st.just(-(10**400)),
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(min_value=0, max_value=MAX_NUMERIC_DATE + 10.0),
    st.booleans(),
    st.none(),
    st.text(alphabet="0123456789.e-+ ", max_size=12),
    st.lists(st.integers(), max_size=2),
    st.builds(lambda d: time.time() + d, st.floats(min_value=-120, max_value=120)),  # near now
    st.sampled_from([MAX_NUMERIC_DATE, MAX_NUMERIC_DATE + 1, 0, -1, 2**63, 2**64, 1e308, 5e-324]),
)
USABLE_TIME = st.one_of(
    st.builds(lambda d: int(time.time() + d), st.integers(min_value=-3600, max_value=10**8)),
    st.builds(lambda d: time.time() + d, st.floats(min_value=-3600, max_value=1e8)),
)
CLAIMS = st.one_of(
    st.fixed_dictionaries(
        {"sub": st.just("alice")},
        optional={"exp": CLAIM_VALUE, "nbf": CLAIM_VALUE, "iat": CLAIM_VALUE},
    ),
    # mostly usable claims with at most one odd value: the accepting side is exercised too
    st.fixed_dictionaries(
        {"sub": st.just("alice"), "exp": USABLE_TIME},
        optional={"nbf": st.one_of(USABLE_TIME, CLAIM_VALUE), "iat": st.one_of(USABLE_TIME, CLAIM_VALUE)},
    ),
)


def _encode(claims: dict[str, Any], key: Any, alg: str, kid: str | None = None) -> str:
    # jwt.encode uses json.dumps, which writes NaN/Infinity and 10**400 as they are
    return jwt.encode(claims, key, algorithm=alg, headers={"kid": kid} if kid else None)


def _valid_now(claims: dict[str, Any]) -> bool | None:
    """What the one rule says now; None when the token is within a second of a boundary
    (the server's clock reads a moment later than ours)."""
    now = time.time()
    try:
        until = token_valid_until(claims, now, LEEWAY)
    except ClaimError:
        try:
            token_valid_until(claims, now + 2, LEEWAY)
            token_valid_until(claims, now - 2, LEEWAY)
        except ClaimError:
            return False
        return None
    return None if until - now < 2 else True


@pytest.fixture
async def jwks_keys() -> AsyncIterator[tuple[str, dict[str, Any]]]:
    """A JWKS endpoint on loopback with one RSA and one EC P-256 key."""
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ec_key = ec.generate_private_key(ec.SECP256R1())
    keys = [
        {**json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(rsa_key.public_key())), "kid": "r1", "alg": "RS256"},
        {**json.loads(jwt.algorithms.ECAlgorithm.to_jwk(ec_key.public_key())), "kid": "e1", "alg": "ES256"},
    ]

    async def serve_keys(request: web.Request) -> web.Response:
        return web.json_response({"keys": keys})

    app = web.Application()
    app.router.add_get("/jwks.json", serve_keys)
    server = TestServer(app)
    await server.start_server()
    try:
        yield str(server.make_url("/jwks.json")), {"RS256": (rsa_key, "r1"), "ES256": (ec_key, "e1")}
    finally:
        await server.close()


@pytest.fixture
async def hs256():
    async with app_client(jwt_leeway=LEEWAY) as client:
        draft_id, _ = await create_draft(client)
        yield client, draft_id


async def _rest_status(client: Any, token: str) -> tuple[int, Any]:
    r = await client.get("/v1/collab/drafts", headers={"Authorization": f"Bearer {token}"})
    return r.status, await r.json()


@EXAMPLES
@given(claims=CLAIMS)
async def test_hs256_rest(hs256, claims: dict[str, Any]) -> None:
    client, _ = hs256
    expected = _valid_now(claims)
    status, body = await _rest_status(client, _encode(claims, TEST_SECRET, "HS256"))
    event(f"status {status}")
    assert status in (200, 401), body
    if status == 401:
        assert body["error"]["code"] == "unauthorized"
    if expected is not None:
        assert status == (200 if expected else 401), (claims, body)


@FEW_EXAMPLES
@given(claims=CLAIMS, via_header=st.booleans())
async def test_hs256_websocket_agrees_with_rest(hs256, claims: dict[str, Any], via_header: bool) -> None:
    client, draft_id = hs256
    token = _encode(claims, TEST_SECRET, "HS256")
    expected = _valid_now(claims)
    if expected is None:
        return
    status, _ = await _rest_status(client, token)
    kwargs: dict[str, Any] = (
        {"headers": {"Authorization": f"Bearer {token}"}}
        if via_header
        else {"params": {"access_token": token}}
    )
    kind, detail = await socket_outcome(client, f"/v1/ws/drafts/{draft_id}", **kwargs)
    if expected:
        assert status == 200
        assert kind == "connected" and detail["user_id"] == "alice", (claims, detail)
    else:
        assert status == 401
        assert (kind, detail) == ("refused", ("unauthorized", 1008)), claims


@EXAMPLES
@given(claims=CLAIMS, alg=st.sampled_from(["RS256", "ES256"]))
async def test_jwks_rest(jwks_keys, claims: dict[str, Any], alg: str) -> None:
    url, keys = jwks_keys
    key, kid = keys[alg]
    async with app_client(jwks_url=url, jwt_secret=None, jwt_leeway=LEEWAY) as client:
        expected = _valid_now(claims)
        status, body = await _rest_status(client, _encode(claims, key, alg, kid))
    assert status in (200, 401), body
    if expected is not None:
        assert status == (200 if expected else 401), (claims, body)


async def test_jwks_websocket_huge_exp(jwks_keys) -> None:
    url, keys = jwks_keys
    async with app_client(jwks_url=url, jwt_secret=None) as client:
        draft_id, _ = await create_draft(client)
        for alg in ("RS256", "ES256"):
            key, kid = keys[alg]
            for exp in (10**400, float("nan"), float("inf"), "9999999999", True, -5):
                token = _encode({"sub": "alice", "exp": exp}, key, alg, kid)
                assert (await _rest_status(client, token))[0] == 401
                outcome = await socket_outcome(
                    client, f"/v1/ws/drafts/{draft_id}", params={"access_token": token}
                )
                assert outcome == ("refused", ("unauthorized", 1008)), (alg, exp)


@pytest.mark.parametrize(
    "claim, value",
    [("exp", 10**400), ("exp", float("nan")), ("exp", float("inf")), ("exp", "99999999999"),
     ("exp", True), ("exp", -1), ("exp", 1e300), ("nbf", 10**400), ("nbf", float("inf")),
     ("nbf", "1"), ("iat", 10**400), ("iat", float("-inf")), ("iat", [1])],
)  # fmt: skip
def test_the_rule_refuses_every_unusable_numeric_date(claim: str, value: Any) -> None:
    claims = {"exp": time.time() + 600, claim: value}
    with pytest.raises(ClaimError):
        token_valid_until(claims, time.time(), LEEWAY)


async def test_a_real_server_answers_401_to_exp_10_to_the_400(tmp_path) -> None:
    import aiohttp

    log = tmp_path / "server.log"
    with ServerProcess(str(tmp_path / "e2e.db"), log_path=log) as srv:
        async with aiohttp.ClientSession() as http:
            for exp in (10**400, float("nan"), "1"):
                token = _encode({"sub": "alice", "exp": exp}, TEST_SECRET, "HS256")
                r = await http.get(
                    f"{srv.url}/v1/collab/drafts", headers={"Authorization": f"Bearer {token}"}
                )
                assert r.status == 401
                assert (await r.json())["error"]["code"] == "unauthorized"
    assert "Traceback" not in log.read_text()
