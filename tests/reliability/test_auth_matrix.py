"""Every route and the socket, against every kind of bad credential (401) and a stranger (403).

HS256 mode with issuer and audience checks. The JWKS cases (unknown ``kid``, RS256/ES256, HS256
signed with the JWKS public key) are in tests/e2e/test_auth.py, against a JWKS server.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import orjson
import pytest

from tests.serverproc import TEST_SECRET, ServerProcess, make_token

ISSUER = "https://issuer.example"
AUDIENCE = "ringlog"
TIMEOUT = aiohttp.ClientTimeout(total=20)


def good(sub: str, **claims: Any) -> str:
    return make_token(sub, iss=ISSUER, aud=AUDIENCE, **claims)


def hs256_raw(payload: dict[str, Any], key: bytes) -> str:
    """HS256 by hand: PyJWT refuses a PEM public key as an HMAC secret (the confusion attack)."""

    def b64(raw: bytes) -> bytes:
        return base64.urlsafe_b64encode(raw).rstrip(b"=")

    signing_input = b64(orjson.dumps({"alg": "HS256", "typ": "JWT"})) + b"." + b64(orjson.dumps(payload))
    return (signing_input + b"." + b64(hmac.new(key, signing_input, hashlib.sha256).digest())).decode()


def bad_credentials() -> dict[str, dict[str, str]]:
    now = int(time.time())
    valid = {"sub": "alice", "exp": now + 3600, "iss": ISSUER, "aud": AUDIENCE}
    public_pem = (
        "-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE3m2e1wGaD1kHT2r5cIt7XmD0wQ0v\n"
        "-----END PUBLIC KEY-----\n"
    )
    bearer = {
        "expired": good("alice", expires_in=-600),
        "not_yet_valid": good("alice", nbf=now + 3600),
        "wrong_signature": make_token(
            "alice", secret="another-secret-of-at-least-32-bytes!!", iss=ISSUER, aud=AUDIENCE
        ),
        "alg_none": jwt.encode(valid, None, algorithm="none"),  # type: ignore[arg-type]
        "hs256_with_public_key": hs256_raw(valid, public_pem.encode()),
        "wrong_issuer": make_token("alice", iss="https://evil.example", aud=AUDIENCE),
        "wrong_audience": make_token("alice", iss=ISSUER, aud="someone-else"),
        "missing_sub": good(None),  # type: ignore[arg-type]
        "missing_exp": jwt.encode(
            {k: v for k, v in valid.items() if k != "exp"}, TEST_SECRET, algorithm="HS256"
        ),
        "garbage": "not.a.jwt",
    }
    out = {name: {"Authorization": f"Bearer {token}"} for name, token in bearer.items()}
    out["none"] = {}
    out["dev_header_while_dev_auth_off"] = {"X-User-Id": "alice"}
    out["basic_scheme"] = {"Authorization": "Basic YWxpY2U6cHc="}
    return out


def routes(d: str) -> list[tuple[str, str, Any]]:
    return [
        ("POST", "/v1/collab/drafts", {"title": "t"}),
        ("GET", "/v1/collab/drafts", None),
        ("GET", f"/v1/collab/drafts/{d}", None),
        ("PATCH", f"/v1/collab/drafts/{d}", {"title": "x"}),
        ("POST", f"/v1/collab/drafts/{d}/segments", {"content": "x"}),
        ("POST", f"/v1/collab/drafts/{d}/ring/pass", {"to_user_id": "bob"}),
        ("POST", f"/v1/collab/drafts/{d}/collaborators", {"user_id": "carol", "role": "viewer"}),
        ("GET", f"/v1/collab/drafts/{d}/events?since=0", None),
        ("GET", f"/v1/collab/drafts/{d}/events?since=5&wait=1", None),
    ]


@pytest.fixture
def server(tmp_path: Path):
    srv = ServerProcess(str(tmp_path / "auth.db"), "--rate-limit", "0", "--jwt-issuer", ISSUER,
                        "--jwt-audience", AUDIENCE, log_path=tmp_path / "server.log")  # fmt: skip
    with srv:
        yield srv


async def setup_draft(http: aiohttp.ClientSession, srv: ServerProcess) -> str:
    auth = {"Authorization": f"Bearer {good('alice')}"}
    async with http.post(f"{srv.url}/v1/collab/drafts", json={"title": "secret"}, headers=auth) as r:
        assert r.status == 201
        d: str = (await r.json())["data"]["id"]
    body = {"user_id": "bob", "role": "contributor"}
    async with http.post(f"{srv.url}/v1/collab/drafts/{d}/collaborators", json=body, headers=auth) as r:
        assert r.status == 201
    return d


async def ws_refusal(
    http: aiohttp.ClientSession, url: str, headers: dict[str, str]
) -> tuple[str, int | None]:
    """The first error code the socket sends and its close code."""
    code = ""
    async with http.ws_connect(url, headers=headers) as ws:
        for _ in range(10):
            try:
                msg = await ws.receive(timeout=5)
            except TimeoutError:
                return "accepted: " + code, None
            if msg.type != aiohttp.WSMsgType.TEXT:
                break
            code = code or orjson.loads(msg.data).get("code", "")
        return code, ws.close_code


async def test_every_route_refuses_every_bad_credential(server: ServerProcess) -> None:
    async with aiohttp.ClientSession(timeout=TIMEOUT) as http:
        d = await setup_draft(http, server)
        failures: list[tuple[Any, ...]] = []
        for name, headers in bad_credentials().items():
            for method, path, body in routes(d):
                async with http.request(method, server.url + path, json=body, headers=headers) as r:
                    payload = await r.json(content_type=None)
                    if r.status != 401 or payload["error"]["code"] != "unauthorized":
                        failures.append((name, method, path, r.status, payload))
            for query in ("", "?since=0"):
                code, close = await ws_refusal(http, f"{server.ws_url}/v1/ws/drafts/{d}{query}", headers)
                if (code, close) != ("unauthorized", 1008):
                    failures.append((name, "WS", query, code, close))
            # browsers' query-string token: the same refusal
            if "Authorization" in headers and headers["Authorization"].startswith("Bearer "):
                token = headers["Authorization"].removeprefix("Bearer ")
                code, close = await ws_refusal(
                    http, f"{server.ws_url}/v1/ws/drafts/{d}?access_token={token}", {}
                )
                if (code, close) != ("unauthorized", 1008):
                    failures.append((name, "WS access_token", "", code, close))
        assert not failures, failures
        # control: the same routes with a good token are not refused for auth
        auth = {"Authorization": f"Bearer {good('alice')}"}
        async with http.get(f"{server.url}/v1/collab/drafts/{d}", headers=auth) as r:
            assert r.status == 200


async def test_strangers_get_403_everywhere_and_access_is_checked_on_every_resume(
    server: ServerProcess,
) -> None:
    async with aiohttp.ClientSession(timeout=TIMEOUT) as http:
        d = await setup_draft(http, server)
        stranger = {"Authorization": f"Bearer {good('mallory')}"}
        for method, path, body in routes(d)[2:]:
            async with http.request(method, server.url + path, json=body, headers=stranger) as r:
                payload = await r.json()
                assert (r.status, payload["error"]["code"]) == (403, "forbidden"), (method, path, payload)
        async with http.get(f"{server.url}/v1/collab/drafts", headers=stranger) as r:
            assert (await r.json())["data"] == []  # the list hides the draft too
        for query in ("", "?since=0", "?since=2"):
            assert await ws_refusal(http, f"{server.ws_url}/v1/ws/drafts/{d}{query}", stranger) == (
                "forbidden",
                1008,
            )
        # a collaborator streams; each reconnect is authenticated and authorised again
        bob = {"Authorization": f"Bearer {good('bob')}"}
        async with http.ws_connect(f"{server.ws_url}/v1/ws/drafts/{d}?since=0", headers=bob) as ws:
            assert orjson.loads((await ws.receive(timeout=10)).data)["type"] == "connected"
            assert orjson.loads((await ws.receive(timeout=10)).data)["type"] == "presence_sync"
            assert orjson.loads((await ws.receive(timeout=10)).data)["seq"] == 1
        expired_bob = {"Authorization": f"Bearer {good('bob', expires_in=-600)}"}
        assert await ws_refusal(http, f"{server.ws_url}/v1/ws/drafts/{d}?since=1", expired_bob) == (
            "unauthorized",
            1008,
        )
        assert await ws_refusal(http, f"{server.ws_url}/v1/ws/drafts/{d}?since=1", stranger) == (
            "forbidden",
            1008,
        )
        async with http.ws_connect(f"{server.ws_url}/v1/ws/drafts/{d}?since=1", headers=bob) as ws:
            assert orjson.loads((await ws.receive(timeout=10)).data)["type"] == "connected"
            assert orjson.loads((await ws.receive(timeout=10)).data)["type"] == "presence_sync"
            assert orjson.loads((await ws.receive(timeout=10)).data)["seq"] == 2


async def test_token_expiring_on_an_open_socket_gets_4401(server: ServerProcess) -> None:
    async with aiohttp.ClientSession(timeout=TIMEOUT) as http:
        d = await setup_draft(http, server)
        # exp 1 s ahead; the server's leeway is 30 s by default, so it closes ~31 s later at most
        token = good("bob", expires_in=-28)
        async with http.ws_connect(
            f"{server.ws_url}/v1/ws/drafts/{d}", headers={"Authorization": f"Bearer {token}"}
        ) as ws:
            assert orjson.loads((await ws.receive(timeout=10)).data)["type"] == "connected"
            assert orjson.loads((await ws.receive(timeout=10)).data)["type"] == "presence_sync"
            error = orjson.loads((await ws.receive(timeout=15)).data)
            assert error["code"] == "token_expired"
            await ws.receive(timeout=10)
            assert ws.close_code == 4401
