"""Who is calling: a Bearer JWT (HS256 secret, or RS256/ES256 from a JWKS URL), or — only with
dev auth on — an ``X-User-Id`` header / ``user_id`` query parameter.

Algorithms are an explicit allow-list per key source: an HS256 secret accepts only HS256, a JWKS
accepts only RS256/ES256, so ``alg: none`` and HS/RS confusion are refused. ``exp`` is required.

The time claims (``exp``, ``nbf``, ``iat``) are judged here, by :func:`token_valid_until`, not by
pyjwt: pyjwt accepts ``"exp": "123"`` and ``true`` and lets ``int(1e400)``'s OverflowError out;
and the WebSocket must close a socket at exactly the moment REST starts refusing its token (same
leeway, same clock), so that moment is computed once, here, and carried in
:attr:`Identity.expires_at`.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import jwt

from projections.decide import user_id_rule, valid_user_id
from server.errors import ApiError
from server.settings import Settings

log = logging.getLogger(__name__)

JWKS_ALGORITHMS = ["RS256", "ES256"]

MAX_NUMERIC_DATE = 253_402_300_799
"""9999-12-31T23:59:59Z: the largest ``exp``/``nbf``/``iat`` accepted (RFC 7519 §2 NumericDate)."""

TIME_CLAIMS = ("exp", "nbf", "iat")


class ClaimError(ValueError):
    """A time claim that is not a usable NumericDate, or says the token is not valid now."""


def numeric_date(claims: Mapping[str, Any], name: str) -> float | None:
    """The claim ``name`` as seconds since the epoch, or None if absent.

    RFC 7519 §2: a NumericDate is a JSON number. Accepted: an int or float (never a bool or a
    string), finite, from 0 to :data:`MAX_NUMERIC_DATE`. Anything else (``1e400``, ``NaN``,
    ``Infinity``, ``-1``, ``true``, ``"123"``) raises :class:`ClaimError`.
    """
    if name not in claims:
        return None
    value = claims[name]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ClaimError(f"'{name}' must be a number")
    if isinstance(value, float) and not math.isfinite(value):
        raise ClaimError(f"'{name}' must be a finite number")
    if not 0 <= value <= MAX_NUMERIC_DATE:
        raise ClaimError(f"'{name}' is out of range")
    return float(value)


def token_valid_until(claims: Mapping[str, Any], now: float, leeway: float) -> float:
    """The moment (epoch seconds) after which a token with these claims is refused.

    The one rule for every channel (API.md "Authentication": ``exp`` required, leeway at most
    60 s): the token is valid while ``now < exp + leeway``, once ``nbf - leeway <= now`` and
    ``iat - leeway <= now`` (as pyjwt judges ``nbf``/``iat``). Raises :class:`ClaimError`.
    """
    exp = numeric_date(claims, "exp")
    nbf = numeric_date(claims, "nbf")
    iat = numeric_date(claims, "iat")
    if exp is None:
        raise ClaimError("token has no 'exp'")
    if now >= exp + leeway:
        raise ClaimError("token expired")
    if nbf is not None and nbf - leeway > now:
        raise ClaimError("token is not valid yet (nbf)")
    if iat is not None and iat - leeway > now:
        raise ClaimError("token is not valid yet (iat)")
    return exp + leeway


@dataclass(frozen=True, slots=True)
class Identity:
    """An authenticated caller.

    ``expires_at``: epoch seconds from which its token is refused (``exp`` plus the leeway, as
    :func:`token_valid_until` computes it; compare with ``time.time()``); None for dev auth.
    """

    user_id: str
    expires_at: float | None = None


def unauthorized(message: str) -> ApiError:
    """The 401 every auth failure becomes."""
    return ApiError(401, "unauthorized", message, headers={"WWW-Authenticate": "Bearer"})


class Authenticator:
    """Checks credentials according to the settings."""

    def __init__(self, settings: Settings, clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.clock = clock
        self._jwks: jwt.PyJWKClient | None = None
        if settings.jwks_url:
            self._jwks = jwt.PyJWKClient(settings.jwks_url, cache_keys=True, lifespan=300, timeout=5)
        if settings.jwt_secret and len(settings.jwt_secret.encode()) < 32:
            log.warning("--jwt-secret is shorter than 32 bytes: HS256 tokens signed with it are weak")
        if settings.dev_auth:
            log.warning("dev auth is ON: X-User-Id / user_id are trusted without proof. Never in production.")
        if not (settings.jwt_secret or settings.jwks_url or settings.dev_auth):
            log.warning("no --jwt-secret, --jwks-url or --dev-auth: every request will get 401")

    async def identify(
        self, headers: Mapping[str, str], query: Mapping[str, str], websocket: bool
    ) -> Identity:
        """The caller's identity, or raise a 401 ApiError."""
        token: str | None = None
        auth = headers.get("Authorization")
        if auth is not None:
            scheme, _, value = auth.partition(" ")
            if scheme.lower() != "bearer" or not value.strip():
                raise unauthorized("Authorization must be 'Bearer <token>'")
            token = value.strip()
        elif websocket and query.get("access_token"):
            token = query["access_token"]
        if token is not None:
            return await self.verify_token(token)
        if self.settings.dev_auth:
            user_id = headers.get("X-User-Id")
            source = "the X-User-Id header"
            if user_id is None and websocket:
                user_id = query.get("user_id")
                source = "the user_id query parameter"
            if user_id is not None:
                if not valid_user_id(user_id, self.settings.limits):
                    raise unauthorized(f"{source} {user_id_rule(self.settings.limits)}")
                return Identity(user_id)
        raise unauthorized("missing credentials")

    async def verify_token(self, token: str) -> Identity:
        """Decode and check a JWT; raise a 401 ApiError on any failure."""
        s = self.settings
        try:
            header = jwt.get_unverified_header(token)
        except (jwt.PyJWTError, UnicodeError, ValueError) as e:
            raise unauthorized("malformed token") from e
        alg = header.get("alg")
        # the time claims are judged by token_valid_until below, not by pyjwt
        options: dict[str, Any] = {
            "require": ["exp", "sub"],
            "verify_exp": False,
            "verify_nbf": False,
            "verify_iat": False,
        }
        kwargs: dict[str, Any] = {"options": options}
        if s.jwt_issuer:
            kwargs["issuer"] = s.jwt_issuer
        if s.jwt_audience:
            kwargs["audience"] = s.jwt_audience
        else:
            options["verify_aud"] = False
        try:
            if alg == "HS256" and s.jwt_secret:
                claims = jwt.decode(token, s.jwt_secret, algorithms=["HS256"], **kwargs)
            elif alg in JWKS_ALGORITHMS and self._jwks is not None:
                signing_key = await self._signing_key(token)
                # only the algorithm of the key named by `kid`: an ES256 header on an RSA key is
                # refused as a token error (pyjwt would raise TypeError preparing the wrong key type)
                key_alg = signing_key.algorithm_name
                algorithms = [key_alg] if key_alg in JWKS_ALGORITHMS else []
                claims = jwt.decode(token, signing_key.key, algorithms=algorithms, **kwargs)
            else:
                raise unauthorized(f"token algorithm {alg!r} is not accepted")
        except (jwt.PyJWTError, TypeError, ValueError, ArithmeticError) as e:
            raise unauthorized(f"invalid token: {e}") from e
        try:
            valid_until = token_valid_until(claims, self.clock(), s.jwt_leeway)
        except ClaimError as e:
            raise unauthorized(str(e)) from None
        sub = claims.get("sub")
        if not valid_user_id(sub, s.limits):
            raise unauthorized(f"token has no valid 'sub': the sub claim {user_id_rule(s.limits)}")
        if s.jwt_authorized_parties:
            azp = claims.get("azp")
            if azp not in s.jwt_authorized_parties:
                raise unauthorized("token's authorized party is not accepted")
        return Identity(str(sub), valid_until)

    async def _signing_key(self, token: str) -> jwt.PyJWK:
        assert self._jwks is not None
        jwks = self._jwks
        try:
            # PyJWKClient fetches with urllib (blocking): keep it off the event loop.
            signing_key = await asyncio.to_thread(jwks.get_signing_key_from_jwt, token)
        except jwt.PyJWKClientConnectionError as e:
            raise ApiError(
                503, "unavailable", "cannot reach the JWKS URL", headers={"Retry-After": "5"}
            ) from e
        except jwt.PyJWTError as e:
            raise unauthorized(f"no usable key for this token: {e}") from e
        return signing_key
