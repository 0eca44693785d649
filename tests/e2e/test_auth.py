"""Every auth path of API.md against a real ``ringlog serve``: HS256, dev auth on/off, and JWKS.

The JWKS endpoint is a tiny aiohttp server inside the test, serving RSA and EC public keys by ``kid``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from tests.e2e.apikit import TIMEOUT, Api, assert_error, receive_close, receive_json
from tests.serverproc import TEST_SECRET, ServerProcess, make_token

ISSUER = "https://issuer.example.test"
AUDIENCE = "ringlog-api"
PARTIES = ("https://app.example.test", "https://admin.example.test")


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def unsigned(header: dict[str, Any], claims: dict[str, Any]) -> str:
    return b64url(json.dumps(header).encode()) + "." + b64url(json.dumps(claims).encode())


def hs256_with_key_bytes(claims: dict[str, Any], key: bytes, kid: str) -> str:
    """An HS256 token whose HMAC key is the RSA public key's bytes (the HS/RS confusion attack)."""
    signing_input = unsigned({"alg": "HS256", "typ": "JWT", "kid": kid}, claims)
    sig = hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    return signing_input + "." + b64url(sig)


def hs512(claims: dict[str, Any], key: bytes) -> str:
    """A correctly signed HS512 token (made by hand: pyjwt warns about the key length)."""
    signing_input = unsigned({"alg": "HS512", "typ": "JWT"}, claims)
    return signing_input + "." + b64url(hmac.new(key, signing_input.encode(), hashlib.sha512).digest())


class Keys:
    def __init__(self) -> None:
        self.rsa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.other_rsa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.ec = ec.generate_private_key(ec.SECP256R1())
        self.rsa_public_pem = self.rsa.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def jwks(self) -> dict[str, Any]:
        rsa_jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.rsa.public_key()))
        ec_jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(self.ec.public_key()))
        return {
            "keys": [
                rsa_jwk | {"kid": "rsa-1", "alg": "RS256", "use": "sig"},
                ec_jwk | {"kid": "ec-1", "alg": "ES256", "use": "sig"},
            ]
        }


def claims(sub: str | None = "alice", **overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "sub": sub, "exp": int(time.time()) + 600, "iat": int(time.time()),
        "iss": ISSUER, "aud": AUDIENCE, "azp": PARTIES[0],
    }  # fmt: skip
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


@pytest.fixture
async def keys() -> Keys:
    return Keys()


@pytest.fixture
async def jwks_url(keys: Keys) -> AsyncIterator[str]:
    app = web.Application()

    async def serve_jwks(request: web.Request) -> web.Response:
        return web.json_response(keys.jwks())

    app.router.add_get("/.well-known/jwks.json", serve_jwks)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}/.well-known/jwks.json"
    finally:
        await runner.cleanup()


@pytest.fixture
async def jwks_api(jwks_url: str, tmp_path: Path) -> AsyncIterator[Api]:
    args = ["--jwks-url", jwks_url, "--jwt-issuer", ISSUER, "--jwt-audience", AUDIENCE,
            "--jwt-authorized-parties", ",".join(PARTIES), "--rate-limit", "0"]  # fmt: skip
    with ServerProcess(str(tmp_path / "auth.db"), *args, log_path=tmp_path / "server.log") as srv:
        async with aiohttp.ClientSession(timeout=TIMEOUT) as http:
            yield Api(srv, http)
        assert srv.stop() == 0


@pytest.fixture
async def hs_api(tmp_path: Path) -> AsyncIterator[Api]:
    """Dev auth off (the default), HS256 secret only."""
    with ServerProcess(str(tmp_path / "hs.db"), "--rate-limit", "0", log_path=tmp_path / "server.log") as srv:
        async with aiohttp.ClientSession(timeout=TIMEOUT) as http:
            yield Api(srv, http)


async def as_token(api: Api, token: str) -> tuple[int, Any]:
    status, body, _ = await api.call("GET", "/v1/collab/drafts", headers={"Authorization": f"Bearer {token}"})
    return status, body


async def test_hs256_paths_and_dev_auth_off(hs_api: Api) -> None:
    api = hs_api
    status, body = await as_token(api, make_token("alice"))
    assert status == 200 and body == {"data": []}
    d = (await api.create("alice"))["id"]
    rejected = {
        "wrong secret": make_token("alice", secret="a-completely-different-secret-of-32-bytes"),
        "expired beyond the leeway": make_token("alice", expires_in=-120),
        "missing sub": make_token(None),
        "empty sub": make_token(""),
        "sub with whitespace": make_token("al ice"),
        "missing exp": jwt.encode({"sub": "alice"}, TEST_SECRET),
        "alg none": unsigned({"alg": "none", "typ": "JWT"}, {"sub": "alice", "exp": int(time.time()) + 600})
        + ".",
        "alg None, empty signature": unsigned({"alg": "None"}, {"sub": "alice", "exp": int(time.time()) + 60})
        + ".",
        "HS512": hs512({"sub": "alice", "exp": int(time.time()) + 600}, TEST_SECRET.encode()),
        "RS256 without a JWKS": jwt.encode(
            {"sub": "alice", "exp": int(time.time()) + 600},
            rsa.generate_private_key(public_exponent=65537, key_size=2048),
            algorithm="RS256",
        ),
        "garbage": "a.b.c",
    }
    for name, token in rejected.items():
        status, body = await as_token(api, token)
        assert_error(status, body, 401, "unauthorized")
        async with api.http.ws_connect(f"{api.server.ws_url}/v1/ws/drafts/{d}?access_token={token}") as ws:
            error = await receive_json(ws)
            assert error["code"] == "unauthorized", name
            assert await receive_close(ws) == 1008, name
    # the default 30 s leeway accepts a token that expired a moment ago
    status, _ = await as_token(api, make_token("alice", expires_in=-5))
    assert status == 200
    # dev auth is off by default: X-User-Id and ?user_id are not credentials
    status, body, _ = await api.call("GET", "/v1/collab/drafts", headers={"X-User-Id": "alice"})
    assert_error(status, body, 401, "unauthorized")
    status, body, _ = await api.call(
        "POST", "/v1/collab/drafts", json={"title": "t"}, headers={"X-User-Id": "alice"}
    )
    assert_error(status, body, 401, "unauthorized")
    for headers, query in (({"X-User-Id": "alice"}, ""), ({}, "?user_id=alice")):
        async with api.http.ws_connect(f"{api.server.ws_url}/v1/ws/drafts/{d}{query}", headers=headers) as ws:
            error = await receive_json(ws)
            assert error["type"] == "error" and error["code"] == "unauthorized"
            assert await receive_close(ws) == 1008
    # the socket takes the token from the header or from ?access_token
    for headers, query in (
        ({"Authorization": f"Bearer {make_token('alice')}"}, ""),
        ({}, f"?access_token={make_token('alice')}"),
    ):
        async with api.http.ws_connect(f"{api.server.ws_url}/v1/ws/drafts/{d}{query}", headers=headers) as ws:
            connected = await receive_json(ws)
            assert connected["type"] == "connected" and connected["user_id"] == "alice"


async def test_jwks_rs256_and_es256_tokens_work(jwks_api: Api, keys: Keys) -> None:
    api = jwks_api
    rs = jwt.encode(claims("alice"), keys.rsa, algorithm="RS256", headers={"kid": "rsa-1"})
    es = jwt.encode(claims("bob", azp=PARTIES[1]), keys.ec, algorithm="ES256", headers={"kid": "ec-1"})
    status, body, _ = await api.call(
        "POST", "/v1/collab/drafts", json={"title": "via clerk"}, headers={"Authorization": f"Bearer {rs}"}
    )
    assert status == 201 and body["data"]["creator_id"] == "alice"
    d = body["data"]["id"]
    status, body = await as_token(api, es)
    assert status == 200 and body == {"data": []}
    async with api.http.ws_connect(f"{api.server.ws_url}/v1/ws/drafts/{d}?access_token={rs}") as ws:
        connected = await receive_json(ws)
        assert connected["type"] == "connected" and connected["user_id"] == "alice"
    # the HS256 secret still works beside the JWKS (ServerProcess always passes one)
    status, _ = await as_token(api, make_token("carol", iss=ISSUER, aud=AUDIENCE, azp=PARTIES[0]))
    assert status == 200


async def test_jwks_rejections(jwks_api: Api, keys: Keys) -> None:
    api = jwks_api

    def rs(kid: str = "rsa-1", key: Any = None, **overrides: Any) -> str:
        return jwt.encode(claims(**overrides), key or keys.rsa, algorithm="RS256", headers={"kid": kid})

    rejected = {
        "unknown kid": rs(kid="rsa-404"),
        "no kid": jwt.encode(claims(), keys.rsa, algorithm="RS256"),
        "right kid, other key": rs(key=keys.other_rsa),
        "HS256 signed with the RSA public key": hs256_with_key_bytes(claims(), keys.rsa_public_pem, "rsa-1"),
        "alg none with a kid": unsigned({"alg": "none", "kid": "rsa-1"}, claims()) + ".",
        "ES256 header on the RSA kid": jwt.encode(
            claims(), keys.ec, algorithm="ES256", headers={"kid": "rsa-1"}
        ),
        "wrong issuer": rs(iss="https://evil.example.test"),
        "no issuer": rs(iss=None),
        "wrong audience": rs(aud="someone-else"),
        "no audience": rs(aud=None),
        "unlisted azp": rs(azp="https://evil.example.test"),
        "no azp": rs(azp=None),
        "expired": rs(exp=int(time.time()) - 300),
        "no exp": rs(exp=None),
        "no sub": rs(sub=None),
    }
    for name, token in rejected.items():
        status, body = await as_token(api, token)
        assert status == 401, (name, status, body)
        assert_error(status, body, 401, "unauthorized")
    # and the valid one still works afterwards (nothing was cached wrongly)
    status, _ = await as_token(api, rs())
    assert status == 200
