"""``server.main._run`` picks uvloop or asyncio's loop without leaving the look-up's ImportError
behind: every exception the server logs would otherwise carry "No module named 'uvloop'" and
"During handling of the above exception…" (found by a fresh-user trial)."""

from __future__ import annotations

import sys

import pytest

from server.main import _run


async def _an_error_raised_while_serving() -> BaseException:
    try:
        raise ValueError("a request failed")
    except ValueError as e:
        return e


def test_without_uvloop_a_logged_error_has_no_import_error_attached(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # `import uvloop` raises ImportError
    error = _run(_an_error_raised_while_serving())  # type: ignore[arg-type]
    assert isinstance(error, ValueError)
    assert error.__context__ is None


def test_the_coroutine_runs_on_uvloop_when_it_is_installed() -> None:
    try:
        import uvloop
    except ImportError:
        expected = "asyncio"
    else:
        expected = uvloop.Loop.__module__.split(".")[0]

    async def loop_module() -> str:
        import asyncio

        return type(asyncio.get_running_loop()).__module__.split(".")[0]

    assert _run(loop_module()) == expected  # type: ignore[arg-type,comparison-overlap]
