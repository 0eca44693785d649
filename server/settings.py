"""Typed settings, built once (from CLI flags and ``RINGLOG_*`` variables) and passed in.

Each setting has exactly one :class:`Rule`. The rule turns the operator's text into a value
(``--port 8000`` and ``RINGLOG_PORT=8000`` go through the same ``from_text``) and checks a typed
value (``Settings(port=8000)`` in code goes through the same ``check``), so a value is accepted
or refused for the same reason whichever way it comes in. Numbers use :mod:`server.params`:
ASCII digits only, ranges checked, nothing clamped. A refusal is a :class:`SettingError`, which
the command line prints as one line naming the flag (and the variable it came from) and exits 2.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

from eventstore.factory import check_store_url
from projections.decide import Limits
from server.origins import parse_allowed_origin
from server.params import ParameterError, int_rule, parse_int, parse_number, plain_number

MAX_BODY_BYTES = 64 * 1024
ENV_PREFIX = "RINGLOG_"


class SettingError(ValueError):
    """A setting's value is refused; ``str()`` is one line naming the flag (and env variable)."""

    def __init__(self, name: str, message: str, env: bool = False) -> None:
        where = f"{flag_of(name)} (from {env_of(name)})" if env else flag_of(name)
        super().__init__(f"{where}: {message}")
        self.name = name
        self.from_env = env


def flag_of(name: str) -> str:
    """``jwt_leeway`` → ``--jwt-leeway``."""
    return "--" + name.replace("_", "-")


def env_of(name: str) -> str:
    """``jwt_leeway`` → ``RINGLOG_JWT_LEEWAY``."""
    return ENV_PREFIX + name.upper()


# -- rules -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rule:
    """How one setting is written as text and which values it may take.

    ``from_text`` raises ValueError (with a message that does not repeat the setting's name);
    ``check`` returns the value (possibly normalised) or raises ValueError.
    """

    describe: str
    from_text: Callable[[str], Any]
    check: Callable[[Any], Any]


def _int_rule(low: int, high: int, note: str = "") -> Rule:
    def from_text(raw: str) -> int:
        return parse_int(raw, "", low, high)

    def check(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise ValueError(int_rule(low, high))
        return value

    return Rule(f"integer {low}–{high}{note}", from_text, check)


def _number_rule(low: float, high: float, unit: str = "", note: str = "") -> Rule:
    def from_text(raw: str) -> float:
        return parse_number(raw, "", low, high, unit)

    def check(value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
            raise ValueError(f"must be a number{unit} from {plain_number(low)} to {plain_number(high)}")
        return float(value)

    return Rule(f"number {plain_number(low)}–{plain_number(high)}{note}", from_text, check)


def _off_or_number_rule(low: float, high: float, unit: str = "") -> Rule:
    """0 (off) or a number from ``low`` to ``high``: for a timeout whose small values do harm."""
    problem = f"must be 0 (off) or a number{unit} from {plain_number(low)} to {plain_number(high)}"
    number = _number_rule(0, high, unit)

    def check_range(value: float) -> float:
        if value != 0 and value < low:
            raise ValueError(problem)
        return value

    def from_text(raw: str) -> float:
        try:
            return check_range(number.from_text(raw))
        except ParameterError:
            raise ValueError(problem) from None

    def check(value: Any) -> float:
        try:
            return check_range(number.check(value))
        except ValueError:
            raise ValueError(problem) from None

    return Rule(f"0 or number {plain_number(low)}–{plain_number(high)}", from_text, check)


def _choice_rule(*choices: str) -> Rule:
    def check(value: Any) -> str:
        if not isinstance(value, str) or value.upper() not in choices:
            raise ValueError("must be one of " + ", ".join(choices))
        return value.upper()

    return Rule("one of " + ", ".join(choices), check, check)


_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def _bool_from_text(raw: str) -> bool:
    word = raw.strip().lower()
    if word in _TRUE:
        return True
    if word in _FALSE:
        return False
    raise ValueError("must be one of " + ", ".join(_TRUE + _FALSE))


def _bool_check(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError("must be true or false")
    return value


def _text_rule(*, optional: bool, spaces: bool = False, url: bool = False) -> Rule:
    def check(value: Any) -> str | None:
        if value is None and optional:
            return None
        if not isinstance(value, str) or not value or not value.replace(" ", "x").isprintable():
            raise ValueError("must be non-empty text without control characters")
        if not spaces and any(ch.isspace() for ch in value):
            raise ValueError("must not contain whitespace")
        if url and not value.startswith(("https://", "http://")):
            raise ValueError("must be an http:// or https:// URL")
        return value

    def from_text(raw: str) -> str | None:
        # an empty value is refused, never read as "not set": RINGLOG_JWT_SECRET= must not
        # quietly turn a secret off; leave the option out instead
        return check(raw)

    return Rule("URL" if url else "text", from_text, check)


def _store_url_rule() -> Rule:
    # eventstore.factory.check_store_url: the one --db rule, shared with the tools' --db/--from/--to
    def check(value: Any) -> str:
        return check_store_url(_text_rule(optional=False, spaces=True).check(value) or "")

    return Rule("SQLite path or postgresql:// URL", check, check)


def _list_rule(item: Callable[[str], str]) -> Rule:
    def check(value: Any) -> tuple[str, ...]:
        if isinstance(value, str) or not isinstance(value, tuple | list):
            raise ValueError("must be a list")
        return tuple(item(part) for part in value)

    def from_text(raw: str) -> tuple[str, ...]:
        return check(tuple(part.strip() for part in raw.split(",") if part.strip()))

    return Rule("comma-separated list", from_text, check)


def _party(value: Any) -> str:
    if not isinstance(value, str) or not value or any(ch.isspace() or not ch.isprintable() for ch in value):
        raise ValueError(f"{value!r} must be non-empty text without spaces or control characters")
    return value


BOOL = Rule("on/off", _bool_from_text, _bool_check)
SECONDS_MAX = 86_400.0


def _setting(default: Any, rule: Rule, help: str) -> Any:
    return field(default=default, metadata={"rule": rule, "help": help})


@dataclass(frozen=True)
class Settings:
    """Everything ``ringlog serve`` can be told. Every field has a ``RINGLOG_<NAME>`` variable.

    Raises :class:`SettingError` when a field breaks its rule (see the module docstring).
    """

    host: str = _setting("127.0.0.1", _text_rule(optional=False), "address to listen on")
    port: int = _setting(
        8000, _int_rule(0, 65535), "TCP port (0 picks a free one; the chosen one is printed)"
    )
    workers: int = _setting(
        1,
        _int_rule(0, 1024, "; 0 = one per core"),
        "worker processes accepting on one port (SO_REUSEPORT) under one supervisor; 0 = one per core",
    )
    worker_timeout: float = _setting(
        30.0,
        _off_or_number_rule(1, SECONDS_MAX, " of seconds"),
        "with --workers: seconds a worker may go without reporting that its event loop turns "
        "(stopped, or blocked) before the supervisor kills and replaces it; 0 = never, else at "
        "least 1 (a worker busy with large catch-ups can miss a few seconds of reports)",
    )
    db: str = _setting(
        "./ringlog.db",
        _store_url_rule(),
        "SQLite file path, or postgresql://user@host:5432/db",
    )
    synchronous: str = _setting(
        "FULL",
        _choice_rule("FULL", "NORMAL", "EXTRA"),
        "SQLite durability: FULL (an acknowledged append survives power loss), EXTRA (FULL, and a "
        "deleted journal is synced too) or NORMAL (faster)",
    )
    pool_size: int = _setting(10, _int_rule(1, 1000), "PostgreSQL connections per server process")
    dev_auth: bool = _setting(False, BOOL, "trust X-User-Id / ?user_id= (development only)")
    jwt_secret: str | None = _setting(
        None, _text_rule(optional=True, spaces=True), "HS256 secret (32 bytes or more)"
    )
    jwks_url: str | None = _setting(
        None, _text_rule(optional=True, url=True), "JWKS URL for RS256/ES256 tokens (keys rotate by kid)"
    )
    jwt_issuer: str | None = _setting(None, _text_rule(optional=True, spaces=True), "required iss claim")
    jwt_audience: str | None = _setting(None, _text_rule(optional=True, spaces=True), "required aud claim")
    jwt_authorized_parties: tuple[str, ...] = _setting(
        (), _list_rule(_party), "accepted azp values, comma-separated"
    )
    jwt_leeway: float = _setting(30.0, _number_rule(0, 60, " of seconds"), "clock-skew leeway in seconds")
    rate_limit: float = _setting(
        20.0,
        _number_rule(0, 1_000_000, note="; 0 = off"),
        "mutations per user per second (bursts to 2x); 0 = off; shared by every process of the store",
    )
    max_sockets_per_user: int = _setting(
        20,
        _int_rule(0, 1_000_000, "; 0 = off"),
        "concurrent WebSockets per user; 0 = off; shared by every process of the store",
    )
    peer_expiry: float = _setting(
        15.0,
        _number_rule(1, 20, " of seconds"),
        "seconds without a heartbeat after which another process's sockets and grants stop counting",
    )
    max_subscriptions_per_socket: int = _setting(
        100,
        _int_rule(1, 1_000_000),
        "drafts one /v1/ws socket may subscribe to at once (beyond it: error too_many_subscriptions)",
    )
    allowed_origins: tuple[str, ...] = _setting(
        (),
        _list_rule(parse_allowed_origin),
        "CORS origins, comma-separated (scheme://host[:port] or *); also the WebSocket Origin allow-list",
    )
    ws_ping_interval: float = _setting(
        25.0,
        _number_rule(0.1, SECONDS_MAX, " of seconds"),
        "seconds between protocol pings; peers that do not answer are dropped",
    )
    ws_flood_limit: int = _setting(
        50,
        _int_rule(0, 1_000_000, "; 0 = off"),
        "client messages per second before the socket is closed with 1008; 0 = off",
    )
    presence_rate: float = _setting(
        10.0,
        _number_rule(0, 1_000_000, note="; 0 = off"),
        "presence updates per socket per second (bursts to 2x); faster updates are coalesced to the "
        "latest state; 0 = off",
    )
    ws_queue_size: int = _setting(
        1024,
        _int_rule(1, 10_000_000),
        "events a slow socket may fall behind before it is closed with 1013",
    )
    ws_queue_bytes: int = _setting(
        4 * 1024 * 1024,
        _int_rule(64 * 1024, 2**40),
        "bytes of frames a slow socket may fall behind before it is closed with 1013 (also bounds the "
        "live events held while a socket catches up)",
    )
    catch_up_cache_bytes: int = _setting(
        64 * 1024 * 1024,
        _int_rule(0, 2**40, "; 0 = off"),
        "bytes of framed catch-up pages (1,000 events each) kept for sockets that replay the same "
        "history; 0 = off",
    )
    ws_enabled: bool = _setting(True, BOOL, "accept WebSocket upgrades (--no-ws-enabled: 503, clients poll)")
    drain_timeout: float = _setting(
        10.0,
        _number_rule(0, SECONDS_MAX, " of seconds"),
        "seconds SIGTERM waits for sockets and in-flight requests",
    )
    longpoll_max: float = _setting(
        30.0, _number_rule(0, SECONDS_MAX, " of seconds"), "largest wait (seconds) accepted by /events"
    )
    title_max: int = _setting(200, _int_rule(1, 1_000_000), "title length limit (characters)")
    description_max: int = _setting(2000, _int_rule(0, 1_000_000), "description length limit (characters)")
    content_max: int = _setting(10_000, _int_rule(1, 1_000_000), "segment length limit (characters)")
    user_id_max: int = _setting(128, _int_rule(1, 1024), "user id length limit (characters)")
    log_level: str = _setting(
        "INFO", _choice_rule("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"), "logging level"
    )
    log_json: bool = _setting(False, BOOL, "one JSON object per log line")
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for f in _setting_fields():
            try:
                value = f.metadata["rule"].check(getattr(self, f.name))
            except ValueError as e:
                raise SettingError(f.name, str(e)) from None
            object.__setattr__(self, f.name, value)  # the normalised value (frozen dataclass)

    @property
    def limits(self) -> Limits:
        """Field limits for the domain rules."""
        return Limits(self.title_max, self.description_max, self.content_max, self.user_id_max)


def _setting_fields() -> list[Any]:
    return [f for f in fields(Settings) if "rule" in f.metadata]


def setting_from_text(name: str, raw: str, from_env: bool = False) -> Any:
    """The value of setting ``name`` written as ``raw``; raises :class:`SettingError`."""
    rule: Rule = next(f.metadata["rule"] for f in _setting_fields() if f.name == name)
    try:
        return rule.from_text(raw)
    except ParameterError as e:
        raise SettingError(name, e.message, from_env) from None
    except ValueError as e:
        raise SettingError(name, str(e), from_env) from None


def _flag_type(name: str) -> Callable[[str], Any]:
    def convert(raw: str) -> Any:
        try:
            return setting_from_text(name, raw)
        except SettingError as e:
            # argparse names the flag itself: "argument --port: must be …"
            raise argparse.ArgumentTypeError(str(e).split(": ", 1)[1]) from None

    convert.__name__ = name  # argparse's fallback message names the type
    return convert


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add one ``--option`` per setting; each help says what it does, its default and its
    environment variable. Values are checked by the setting's rule as they are parsed."""
    for f in _setting_fields():
        flag = flag_of(f.name)
        rule: Rule = f.metadata["rule"]
        default = f.default
        if isinstance(default, tuple):
            default = ",".join(default) or "none"
        elif isinstance(default, bool):
            default = "on" if default else "off"
        elif default is None:
            default = "none"
        help_text = f"{f.metadata['help']} [{rule.describe}; default: {default}; env: {env_of(f.name)}]"
        help_text = help_text.replace("%", "%%")
        if f.metadata["rule"] is BOOL:
            parser.add_argument(flag, dest=f.name, action="store_true", default=None, help=help_text)
            parser.add_argument(
                "--no-" + f.name.replace("_", "-"),
                dest=f.name,
                action="store_false",
                help=f"turn {flag} off",
            )
        else:
            parser.add_argument(
                flag,
                dest=f.name,
                default=None,
                type=_flag_type(f.name),
                metavar=f.name.upper(),
                help=help_text,
            )


def settings_from(args: argparse.Namespace | None = None, env: Mapping[str, str] | None = None) -> Settings:
    """Flags win over ``RINGLOG_*`` variables, which win over defaults.

    Raises :class:`SettingError` (naming the flag, and the variable when the value came from
    one) for a value its rule refuses; flags parsed by :func:`add_arguments` are already checked.
    """
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    for f in _setting_fields():
        given = getattr(args, f.name, None) if args is not None else None
        if given is not None:
            values[f.name] = given
            continue
        raw = env.get(env_of(f.name))
        if raw is not None:
            values[f.name] = setting_from_text(f.name, raw, from_env=True)
    return Settings(**values)


def parse_settings(argv: Sequence[str], env: Mapping[str, str] | None = None) -> Settings:
    """Settings from a ``serve`` argument list (used by tests)."""
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return settings_from(parser.parse_args(list(argv)), env)
