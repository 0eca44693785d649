"""The web package (web/: TypeScript client, React hook) runs inside the Python suite.

``npm ci`` installs web/'s locked dependencies when node_modules is missing or was installed
from another package-lock.json; then ``tsc --noEmit`` and the vitest suite must pass, the
committed server/static/ringlog.js must be exactly a fresh ``vite build`` of web/src, the example
React app (web/examples/react, type-checked with the rest) must build, and the
fold fixtures the vitest suite compares against must be exactly what projections/fold.py gives
today. Without npm these skip with the reason, except under CI=true, where they fail.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
WEB = ROOT / "web"
LOCK = WEB / "package-lock.json"
STAMP = WEB / "node_modules" / ".ringlog-lock-sha256"
"""sha256 of the package-lock.json node_modules was installed from (written after npm ci)."""
NPM_CI_TIMEOUT_S = 900
STEP_TIMEOUT_S = 600


def _run(args: list[str], timeout: float) -> None:
    """Run a command in web/; fail the test with its output when it fails or hangs."""
    try:
        done = subprocess.run(args, cwd=WEB, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as e:
        out = [
            x.decode(errors="replace") if isinstance(x, bytes) else (x or "") for x in (e.stdout, e.stderr)
        ]
        pytest.fail(f"{' '.join(args)} did not finish within {timeout} s:\n{out[0]}\n{out[1]}")
    if done.returncode != 0:
        pytest.fail(
            f"{' '.join(args)} exited {done.returncode}:\n{done.stdout[-20000:]}\n{done.stderr[-10000:]}"
        )


@pytest.fixture(scope="module")
def npm() -> str:
    """The npm executable, with web/node_modules installed from the committed lock file."""
    found = shutil.which("npm")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail(
                "npm must be installed in CI (Node.js 20 and npm): the web package's tests cannot run"
            )
        pytest.skip("npm not found: install Node.js 20 and npm to run the web package's tests")
    want = hashlib.sha256(LOCK.read_bytes()).hexdigest()
    if not STAMP.exists() or STAMP.read_text().strip() != want:
        _run([found, "ci", "--no-audit", "--no-fund"], NPM_CI_TIMEOUT_S)
        STAMP.write_text(want + "\n")
    return found


@pytest.mark.timeout(NPM_CI_TIMEOUT_S + STEP_TIMEOUT_S)
def test_typescript_typechecks(npm: str) -> None:
    """Every source and test file of web/ type-checks (strict)."""
    _run([npm, "exec", "--no", "--", "tsc", "--noEmit"], STEP_TIMEOUT_S)


@pytest.mark.timeout(NPM_CI_TIMEOUT_S + STEP_TIMEOUT_S)
def test_vitest_suite_passes(npm: str) -> None:
    """The client core and the hook: fold vs the Python fold, deliveries, optimistic writes, outbox, status."""
    _run([npm, "exec", "--no", "--", "vitest", "run"], STEP_TIMEOUT_S)


@pytest.mark.timeout(NPM_CI_TIMEOUT_S + STEP_TIMEOUT_S)
def test_static_ringlog_js_is_a_fresh_build(npm: str, tmp_path: Path) -> None:
    """server/static/ringlog.js is the build of web/src, not a hand-edited copy (run `npm run build` in web/)."""
    _run(
        [npm, "exec", "--no", "--", "vite", "build", "--outDir", str(tmp_path), "--logLevel", "error"],
        STEP_TIMEOUT_S,
    )
    fresh = (tmp_path / "ringlog.js").read_text()
    committed = (ROOT / "server" / "static" / "ringlog.js").read_text()
    assert committed == fresh, (
        "server/static/ringlog.js differs from a fresh build: run `npm run build` in web/"
    )


@pytest.mark.timeout(NPM_CI_TIMEOUT_S + STEP_TIMEOUT_S)
def test_react_example_app_builds(npm: str, tmp_path: Path) -> None:
    """web/examples/react builds (``npm run example:build``) into a page whose module and styles exist."""
    _run(
        [npm, "exec", "--no", "--", "vite", "build", "--config", "examples/react/vite.config.ts",
         "--outDir", str(tmp_path), "--emptyOutDir", "--logLevel", "error"],
        STEP_TIMEOUT_S,
    )  # fmt: skip
    html = (tmp_path / "index.html").read_text()
    assets = re.findall(r'(?:src|href)="\./(assets/[^"]+)"', html)
    assert any(a.endswith(".js") for a in assets) and any(a.endswith(".css") for a in assets), html
    for asset in assets:
        assert (tmp_path / asset).is_file(), f"index.html names {asset}, which the build did not write"
    bundle = next((tmp_path / a).read_text() for a in assets if a.endswith(".js"))
    assert "/v1/ws/drafts/" in bundle, "the app's bundle does not contain the package's connectDraft"


def test_fold_fixtures_are_what_the_python_fold_gives() -> None:
    """web/test/fixtures/fold.json cannot drift from projections/fold.py (regenerate with the script)."""
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "web_fold_fixtures.py"), "--check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
