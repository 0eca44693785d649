"""Kind 9 (serve): every ``ringlog serve`` option is checked by one rule, flag and variable alike.

A refused value — ``--port abc``, ``--synchronous fast``, ``--rate-limit -5``, the same through
``RINGLOG_*`` — ends the command with exit status 2 and one line naming the option (and the
variable when the value came from one); never a traceback. ``ringlog serve --help`` says for
every option what it does, its default and its variable.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import subprocess
import sys
from dataclasses import fields
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from server.cli import build_parser
from server.settings import SettingError, Settings, env_of, flag_of, settings_from
from tests.hardening.kit import INTEGER_LIKE

SETTING_NAMES = [f.name for f in fields(Settings) if "rule" in f.metadata]
BOOL_SETTINGS = {f.name for f in fields(Settings) if f.type == "bool"}


def _ringlog(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run(
        [sys.executable, "-m", "server.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


@pytest.mark.parametrize(
    "args, env, names",
    [
        (["--port", "abc"], {}, ["--port"]),
        (["--port", "65536"], {}, ["--port"]),
        (["--synchronous", "fast"], {}, ["--synchronous"]),
        (["--rate-limit", "-5"], {}, ["--rate-limit"]),
        (["--jwt-leeway", "61"], {}, ["--jwt-leeway"]),
        (["--allowed-origins", "null"], {}, ["--allowed-origins"]),
        (["--ws-queue-size", "0"], {}, ["--ws-queue-size"]),
        (["--workers", "-1"], {}, ["--workers"]),
        (["--workers", "1025"], {}, ["--workers"]),
        ([], {"RINGLOG_WORKERS": "two"}, ["--workers", "RINGLOG_WORKERS"]),
        ([], {"RINGLOG_PORT": "abc"}, ["--port", "RINGLOG_PORT"]),
        ([], {"RINGLOG_SYNCHRONOUS": "fast"}, ["--synchronous", "RINGLOG_SYNCHRONOUS"]),
        ([], {"RINGLOG_RATE_LIMIT": "-5"}, ["--rate-limit", "RINGLOG_RATE_LIMIT"]),
        ([], {"RINGLOG_DEV_AUTH": "maybe"}, ["--dev-auth", "RINGLOG_DEV_AUTH"]),
        ([], {"RINGLOG_LOG_LEVEL": "loud"}, ["--log-level", "RINGLOG_LOG_LEVEL"]),
        ([], {"RINGLOG_WS_PING_INTERVAL": "inf"}, ["--ws-ping-interval", "RINGLOG_WS_PING_INTERVAL"]),
        # an empty secret was silently "no secret"
        (["--jwt-secret", ""], {}, ["--jwt-secret"]),
        ([], {"RINGLOG_JWT_SECRET": ""}, ["--jwt-secret", "RINGLOG_JWT_SECRET"]),
        ([], {"RINGLOG_JWT_ISSUER": ""}, ["--jwt-issuer", "RINGLOG_JWT_ISSUER"]),
        (["--jwks-url", ""], {}, ["--jwks-url"]),
        (["--db", "mysql://x"], {}, ["--db", "SQLite file path or a postgresql:// URL"]),
    ],
)
def test_a_refused_option_is_one_line_and_exit_2(
    args: list[str], env: dict[str, str], names: list[str]
) -> None:
    run = _ringlog("serve", *args, env=env)
    assert run.returncode == 2, run
    assert "Traceback" not in run.stderr
    assert run.stderr.count("\n") == 1, run.stderr
    assert run.stderr.startswith("ringlog serve: error: ")
    for name in names:
        assert name in run.stderr
    assert run.stdout == ""  # never started listening


def test_help_says_what_each_option_does_its_default_and_its_variable() -> None:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    serve = sub.choices["serve"]
    by_flag = {a.option_strings[0]: a for a in serve._actions if a.option_strings}
    for name in SETTING_NAMES:
        action = by_flag[flag_of(name)]
        assert action.help and action.help != argparse.SUPPRESS
        assert f"env: {env_of(name)}" in action.help
        assert "default: " in action.help
        assert len(action.help.split("[", 1)[0].strip()) > 10, action.help  # says what it does
    text = serve.format_help()
    for name in SETTING_NAMES:
        assert env_of(name) in text.replace("\n", " ").replace("  ", "")


def _from_flag(name: str, raw: str) -> tuple[str, Any]:
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr):
            args = build_parser().parse_args(["serve", f"{flag_of(name)}={raw}"])
        return "ok", getattr(settings_from(args, {}), name)
    except SystemExit as e:
        assert e.code == 2
        return "refused", stderr.getvalue()


def _from_env(name: str, raw: str) -> tuple[str, Any]:
    try:
        return "ok", getattr(settings_from(None, {env_of(name): raw}), name)
    except SettingError as e:
        return "refused", str(e)


VALUE_TEXT = st.one_of(
    INTEGER_LIKE,
    st.text(max_size=12),
    st.sampled_from(["FULL", "normal", "EXTRA", "fast", "0.5", "1e3", "nan", "inf", "-0", "60", "60.1", "true",
                     "off", "DEBUG", "*", "https://a.example/", "null", "a,b", "", " "]),
)  # fmt: skip


@settings(max_examples=600, deadline=None)
@given(name=st.sampled_from([n for n in SETTING_NAMES if n not in BOOL_SETTINGS]), raw=VALUE_TEXT)
def test_flag_and_variable_follow_one_rule(name: str, raw: str) -> None:
    if "\x00" in raw or (raw.startswith("-") and not raw[1:2].isdigit()):
        return  # neither argv nor the environment can carry these as a value
    flag = _from_flag(name, raw)
    env = _from_env(name, raw)
    if env[0] == "ok" and raw == "" and flag[0] == "ok":
        return
    assert flag[0] == env[0] or raw == "", (name, raw, flag, env)  # empty variable = not set
    if flag[0] == "ok" and env[0] == "ok":
        assert flag[1] == env[1]
    if flag[0] == "refused":
        assert flag[1].count("\n") == 1 and f"argument {flag_of(name)}:" in flag[1]
    if env[0] == "refused":
        assert str(env[1]).startswith(f"{flag_of(name)} (from {env_of(name)}): ")
        assert "\n" not in str(env[1])


@pytest.mark.parametrize("name", sorted(BOOL_SETTINGS))
@pytest.mark.parametrize("raw", ["1", "true", "YES", "on", "0", "false", "no", "Off", "maybe", "2", ""])
def test_boolean_variables(name: str, raw: str) -> None:
    kind, value = _from_env(name, raw)
    if raw.lower() in ("1", "true", "yes", "on"):
        assert (kind, value) == ("ok", True)
    elif raw.lower() in ("0", "false", "no", "off"):
        assert (kind, value) == ("ok", False)
    else:
        assert kind == "refused" and env_of(name) in value


def test_settings_built_in_code_follow_the_same_rules() -> None:
    for bad in ({"port": -1}, {"port": True}, {"jwt_leeway": 61}, {"synchronous": "fast"}, {"ws_queue_size": 0},
                {"allowed_origins": ("null",)}, {"rate_limit": float("nan")}, {"host": ""}):  # fmt: skip
        with pytest.raises(SettingError):
            Settings(**bad)
    assert Settings(synchronous="normal").synchronous == "NORMAL"
    assert Settings(allowed_origins=("HTTPS://A.example:443/",)).allowed_origins == ("https://a.example",)


def test_every_setting_has_a_rule_and_so_a_flag_a_variable_and_help() -> None:
    unruled = [f.name for f in fields(Settings) if f.name != "extra" and "rule" not in f.metadata]
    assert unruled == [], "declare new settings with _setting(default, rule, help)"


def test_every_accepted_synchronous_mode_is_documented() -> None:
    from pathlib import Path

    from server.settings import parse_settings

    run = _ringlog("serve", "--help")
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    row = next(line for line in readme.splitlines() if line.startswith("| `--synchronous`"))
    for mode in ("FULL", "NORMAL", "EXTRA"):
        assert parse_settings(["--synchronous", mode.lower()]).synchronous == mode
        assert mode in " ".join(run.stdout.split()) and f"`{mode}`" in row, mode
