"""Fixtures for the web package's fold: event logs and the states projections/fold.py gives.

    python scripts/web_fold_fixtures.py            # (re)writes web/test/fixtures/fold.json
    python scripts/web_fold_fixtures.py --check    # exit 1 when the committed file differs

The TypeScript fold (web/src/fold.ts) is a port of projections/fold.py; its vitest suite folds
every log in this file and compares each prefix's state with the Python fold's. The pytest
module tests/web/test_web_package.py regenerates the file and compares it with the committed
one, so the fixtures cannot drift from the Python fold. Deterministic: a fixed seed, fixed
timestamps, sorted keys.
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path
from typing import Any

import orjson

from projections.fold import FoldError, fold_all
from projections.state import DraftState

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.projections.eventlogs import random_log  # noqa: E402

OUT = ROOT / "web" / "test" / "fixtures" / "fold.json"
SEED = 20261130
LOGS = 24
MAX_LENGTH = 30


class _Env:
    """The envelope fields fold reads (projections.fold.FoldableEvent) over a decoded dict."""

    def __init__(self, raw: dict[str, Any]) -> None:
        self.type: str = raw["type"]
        self.draft_id: str = raw["draft_id"]
        self.seq: int = raw["seq"]
        self.ts: str = raw["ts"]
        self.data: dict[str, Any] = raw["data"]


def _invalid_logs(valid: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Logs the fold refuses (FoldError), with the index of the event it refuses."""
    first, second = valid[0], valid[1]
    cases = [
        ("gap", [first, {**second, "seq": 3}]),
        ("repeat", [first, {**second, "seq": 1}]),
        ("created twice", [first, {**first, "seq": 2}]),
        ("not created first", [second]),
        ("another draft", [first, {**second, "draft_id": "draft_other"}]),
    ]
    out = []
    for name, events in cases:
        refused = None
        state: DraftState | None = None
        for i, e in enumerate(events):
            try:
                state = fold_all(state, [_Env(e)])
            except FoldError:
                refused = i
                break
        assert refused is not None, name
        out.append({"name": name, "events": events, "refused_at": refused})
    return out


def build() -> bytes:
    """The fixture file's bytes: {"logs": [{"events", "states"}], "invalid": [...]}."""
    rng = random.Random(SEED)
    logs = []
    for n in range(LOGS):
        events = random_log(rng, f"draft_fx{n:02d}", rng.randrange(1, MAX_LENGTH + 1))
        states: list[dict[str, Any]] = []
        state: DraftState | None = None
        for e in events:
            state = fold_all(state, [_Env(e)])
            assert state is not None
            states.append(state.to_dict())
        logs.append({"events": events, "states": states})
    doc = {
        "generated_by": "scripts/web_fold_fixtures.py (do not edit: regenerate)",
        "logs": logs,
        "invalid": _invalid_logs(
            logs[0]["events"] if len(logs[0]["events"]) > 1 else random_log(rng, "draft_x", 3)
        ),
    }
    return orjson.dumps(doc, option=orjson.OPT_SORT_KEYS) + b"\n"


def main(argv: list[str] | None = None) -> int:
    """Write (or with ``--check`` compare) the fixture file; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare with the committed file, write nothing")
    args = parser.parse_args(argv)
    fresh = build()
    if args.check:
        same = OUT.exists() and OUT.read_bytes() == fresh
        print("fixtures up to date" if same else f"{OUT} differs from the Python fold: regenerate it")
        return 0 if same else 1
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_bytes(fresh)
    print(f"wrote {OUT} ({len(fresh)} bytes, {LOGS} logs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
