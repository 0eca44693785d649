"""Typed settings, built once (from CLI flags and ``RINGLOG_*`` variables) and passed in."""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

from projections.decide import Limits

MAX_BODY_BYTES = 64 * 1024


@dataclass(frozen=True)
class Settings:
    """Everything ``ringlog serve`` can be told. Every field has a ``RINGLOG_<NAME>`` variable."""

    host: str = "127.0.0.1"
    port: int = 8000
    db: str = "./ringlog.db"
    synchronous: str = "FULL"
    pool_size: int = 10
    dev_auth: bool = False
    jwt_secret: str | None = None
    jwks_url: str | None = None
    jwt_issuer: str | None = None
    jwt_audience: str | None = None
    jwt_authorized_parties: tuple[str, ...] = ()
    jwt_leeway: float = 30.0
    rate_limit: float = 20.0
    max_sockets_per_user: int = 20
    allowed_origins: tuple[str, ...] = ()
    ws_ping_interval: float = 25.0
    ws_flood_limit: int = 50
    ws_queue_size: int = 1024
    ws_queue_bytes: int = 4 * 1024 * 1024
    ws_enabled: bool = True
    drain_timeout: float = 10.0
    longpoll_max: float = 30.0
    title_max: int = 200
    description_max: int = 2000
    content_max: int = 10_000
    user_id_max: int = 128
    log_level: str = "INFO"
    log_json: bool = False
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not 0 <= self.jwt_leeway <= 60:
            raise ValueError("jwt_leeway must be between 0 and 60 seconds")
        if self.rate_limit < 0 or self.max_sockets_per_user < 0:
            raise ValueError("rate_limit and max_sockets_per_user must be >= 0")
        if self.synchronous.upper() not in ("FULL", "NORMAL", "EXTRA"):
            raise ValueError("synchronous must be FULL, NORMAL or EXTRA")

    @property
    def limits(self) -> Limits:
        """Field limits for the domain rules."""
        return Limits(self.title_max, self.description_max, self.content_max, self.user_id_max)


_BOOL_TRUE = {"1", "true", "yes", "on"}


def _field_type(name: str) -> str:
    for f in fields(Settings):
        if f.name == name:
            return str(f.type)
    raise KeyError(name)


def _convert(name: str, raw: str) -> Any:
    kind = _field_type(name)
    if kind == "bool":
        return raw.strip().lower() in _BOOL_TRUE
    if kind == "int":
        return int(raw)
    if kind == "float":
        return float(raw)
    if kind.startswith("tuple"):
        return tuple(part.strip() for part in raw.split(",") if part.strip())
    return raw


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add one ``--option`` per setting (defaults come from the environment, then Settings)."""
    for f in fields(Settings):
        if f.name == "extra":
            continue
        flag = "--" + f.name.replace("_", "-")
        if str(f.type) == "bool":
            parser.add_argument(flag, dest=f.name, action="store_true", default=None)
            parser.add_argument(
                "--no-" + f.name.replace("_", "-"), dest=f.name, action="store_false", help=argparse.SUPPRESS
            )
        else:
            parser.add_argument(flag, dest=f.name, default=None, metavar=f.name.upper())


def settings_from(args: argparse.Namespace | None = None, env: Mapping[str, str] | None = None) -> Settings:
    """Flags win over ``RINGLOG_*`` variables, which win over defaults."""
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    for f in fields(Settings):
        if f.name == "extra":
            continue
        raw = env.get("RINGLOG_" + f.name.upper())
        if raw is not None:
            values[f.name] = _convert(f.name, raw)
        given = getattr(args, f.name, None) if args is not None else None
        if given is not None:
            values[f.name] = given if isinstance(given, bool) else _convert(f.name, str(given))
    return Settings(**values)


def parse_settings(argv: Sequence[str], env: Mapping[str, str] | None = None) -> Settings:
    """Settings from a ``serve`` argument list (used by tests)."""
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return settings_from(parser.parse_args(list(argv)), env)
