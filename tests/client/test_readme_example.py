"""The README's Python client example runs as written (a script with ``asyncio.run``) against a real server."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from pathlib import Path

from ringlog import RinglogClient
from tests.serverproc import ServerProcess

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()
URL_LINE = 'URL = "http://127.0.0.1:8000"\n'


def _snippet(index: int = 0) -> str:
    section = README.split("### Python client", 1)[1].split("\n## ", 1)[0]
    snippets = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert len(snippets) > index
    return str(snippets[index])


async def test_the_python_client_example_works(server: ServerProcess, tmp_path: Path) -> None:
    code = _snippet()
    assert URL_LINE in code and "asyncio.run(main())" in code
    script = tmp_path / "example.py"
    script.write_text(code.replace(URL_LINE, f"URL = {server.url!r}\n"))
    for _ in range(2):  # as written, again and again: each run makes its own draft
        run = await asyncio.to_thread(
            subprocess.run, [sys.executable, str(script)], capture_output=True, timeout=60, cwd=tmp_path
        )
        assert run.returncode == 0, run.stderr
        lines = run.stdout.decode().splitlines()
        assert [line.split()[:2] for line in lines] == [
            ["1", "collab.draft_created"],
            ["2", "collab.segment_added"],
        ]
        assert "'content': 'Hello'" in lines[1]
    async with RinglogClient(server.url, user_id="alice") as alice:
        assert [d.title for d in await alice.list_drafts()] == ["Hello draft", "Hello draft"]


async def test_the_multiplexed_socket_example_works(server: ServerProcess, tmp_path: Path) -> None:
    code = _snippet(1)
    assert URL_LINE in code and "RinglogSocket" in code
    script = tmp_path / "socket_example.py"
    script.write_text(code.replace(URL_LINE, f"URL = {server.url!r}\n"))
    run = await asyncio.to_thread(
        subprocess.run, [sys.executable, str(script)], capture_output=True, timeout=60, cwd=tmp_path
    )
    assert run.returncode == 0, run.stderr
    assert (
        run.stdout.decode().splitlines()
        == [
            "True 1 collab.draft_created",
            "True 2 collab.segment_added",
        ]
        * 2
    )
