"""The README's Python client example runs as written against a real server."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest

from ringlog import RinglogClient
from tests.serverproc import ServerProcess

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


async def test_the_python_client_example_works(
    server: ServerProcess, capsys: pytest.CaptureFixture[str]
) -> None:
    section = README.split("### Python client", 1)[1]
    snippet = re.search(r"```python\n(.*?)```", section, flags=re.S)
    assert snippet is not None
    scope: dict[str, object] = {}
    exec(snippet.group(1), scope)
    async with RinglogClient(server.url, user_id="alice") as alice:
        draft = await alice.create_draft("Readme")
    await asyncio.wait_for(scope["follow"](server.url, draft.id), 20)  # type: ignore[operator]
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[:2] for line in lines] == [
        ["1", "collab.draft_created"],
        ["2", "collab.segment_added"],
    ]
    assert "'content': 'Hello'" in lines[1]
