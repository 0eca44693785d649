"""The README is tested: its commands, its configuration table and its token recipe."""

from __future__ import annotations

import re
from dataclasses import fields
from pathlib import Path

from server.auth import Authenticator
from server.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def _sh_blocks() -> list[str]:
    return re.findall(r"```sh\n(.*?)```", README, flags=re.S)


def test_quick_start_is_two_commands_and_ci_runs_the_test_one() -> None:
    quick = README.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    commands = [b.strip() for b in re.findall(r"```sh\n(.*?)```", quick, flags=re.S)]
    assert len(commands) == 2
    serve, test = commands
    assert "ringlog serve" in serve and "\n" not in serve
    assert "pytest" in test and "\n" not in test
    ci = (ROOT / ".ci" / "run").read_text().strip().splitlines()
    assert ci[-1].strip() == test


def test_every_setting_is_in_the_configuration_table() -> None:
    table = README.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    for f in fields(Settings):
        if f.name == "extra":
            continue
        flag = "--" + f.name.replace("_", "-")
        env = "RINGLOG_" + f.name.upper()
        assert f"`{flag}`" in table, f"{flag} missing from README"
        assert f"`{env}`" in table, f"{env} missing from README"


async def test_the_token_recipe_is_accepted() -> None:
    snippet = re.search(r"```python\n(.*?)```", README, flags=re.S)
    assert snippet is not None
    scope: dict[str, object] = {}
    exec(snippet.group(1), scope)
    token = scope["token"]
    assert isinstance(token, str)
    auth = Authenticator(Settings(jwt_secret="replace-with-a-random-secret-of-32-bytes-or-more"))
    identity = await auth.verify_token(token)
    assert identity.user_id == "alice"
