"""The ``ringlog`` command line: serve, and the operator tools that work on a log.

No command shows a traceback. Each ends with one line on stderr when it cannot do its job, and
an exit status: 0 done, 1 failed (the store cannot be reached or read, the log is unsound or
cannot be folded, the draft does not exist, the stream was refused), 2 usage (a bad flag or
value, a database file that does not exist), 130 interrupted. Anything unexpected is also one
line; ``ringlog --debug …`` or ``RINGLOG_DEBUG=1`` adds its traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import sys
import traceback
from collections.abc import Sequence
from typing import Any, NoReturn

import orjson

from eventstore import StoreError, open_store
from eventstore.factory import StoreUrlError, check_store_url, sqlite_path
from eventstore.ownership import ToolLock, acquire_tool_lock
from eventstore.store import Store
from eventstore.verify import verify_log
from projections.fold import FoldError, fold_summary
from projections.runner import rebuild
from projections.state import DraftSummary
from server.params import MAX_SEQ, int_flag
from server.progress import Progress
from server.settings import SettingError, add_arguments, settings_from


class _Parser(argparse.ArgumentParser):
    """Usage errors are one line ("ringlog serve: error: argument --port: …") and exit 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")

    def _get_values(self, action: argparse.Action, arg_strings: list[str]) -> Any:
        """``--flag=--`` gives the flag the value ``--``, checked by the flag's own type.

        Python 3.11's argparse drops a ``--`` from an option's strings, so ``--port=--`` parsed
        to ``[]`` instead of a usage error (found by tests/hardening/test_integers.py).
        """
        if action.option_strings and action.nargs is None and arg_strings == ["--"]:
            return self._get_value(action, "--")
        return super()._get_values(action, arg_strings)


def store_url(raw: str) -> str:
    """An argparse ``type=`` for ``--db``, ``--from`` and ``--to``: ``check_store_url``'s one
    rule, refused as a usage error (exit 2) naming the flag."""
    try:
        return check_store_url(raw)
    except StoreUrlError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


store_url.__name__ = "store URL"


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for every subcommand; integer flags go through :func:`int_flag`."""
    parser = _Parser(prog="ringlog", description="Event-sourced collaboration backend")
    parser.add_argument(
        "--debug",
        action="store_true",
        default=False,
        help="show the traceback of an unexpected error (also RINGLOG_DEBUG=1)",
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    serve = sub.add_parser(
        "serve",
        help="run the HTTP and WebSocket server",
        description="Run the HTTP and WebSocket server. Every option can also be set by the environment "
        "variable named in its help (flags win); a refused value is a usage error (exit 2).",
    )
    add_arguments(serve)

    replay = sub.add_parser("replay", help="a draft's state as of a seq, from the log alone")
    replay.add_argument("--db", required=True, type=store_url, metavar="DB")
    replay.add_argument("--draft", required=True)
    replay.add_argument("--until-seq", type=int_flag(1, MAX_SEQ), default=None, metavar="N")
    replay.add_argument("--json", action="store_true", help="print canonical JSON")

    log_cmd = sub.add_parser("log", help="a draft's events as JSON lines")
    log_cmd.add_argument("--db", required=True, type=store_url, metavar="DB")
    log_cmd.add_argument("--draft", required=True)
    log_cmd.add_argument("--since", type=int_flag(0, MAX_SEQ), default=0, metavar="N")

    drafts = sub.add_parser("drafts", help="list the drafts in a log (id, title, archived, seq, updated)")
    drafts.add_argument("--db", required=True, type=store_url, metavar="DB")
    drafts.add_argument("--json", action="store_true", help="one JSON object per draft (JSON lines)")

    verify = sub.add_parser("verify", help="check seqs, positions and the hash chain")
    verify.add_argument("--db", required=True, type=store_url, metavar="DB")

    rebuild_cmd = sub.add_parser("rebuild", help="rebuild every projection from the log")
    rebuild_cmd.add_argument("--db", required=True, type=store_url, metavar="DB")

    copy = sub.add_parser("copy", help="copy a whole log between stores (SQLite <-> PostgreSQL)")
    copy.add_argument("--from", dest="source", required=True, type=store_url, metavar="DB")
    copy.add_argument("--to", dest="target", required=True, type=store_url, metavar="DB")
    copy.add_argument("--force", action="store_true", help="copy into a non-empty target")

    tail = sub.add_parser("tail", help="follow a draft's events live")
    tail.add_argument("--url", required=True)
    tail.add_argument("--draft", required=True)
    tail.add_argument("--since", type=int_flag(0, MAX_SEQ), default=None, metavar="N")
    tail.add_argument("--token", default=None)
    tail.add_argument("--user-id", default=None)
    tail.add_argument("--pretty", action="store_true", help="a readable line per event")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``ringlog`` console script; returns the exit status (module docstring)."""
    args = build_parser().parse_args(argv)
    debug = bool(args.debug) or os.environ.get("RINGLOG_DEBUG", "") not in ("", "0")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    command = f"ringlog {args.command}"
    try:
        return _dispatch(args)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # stdout closed early (`ringlog log … | head`): nothing more to say
        _silence_stdout()
        return 1
    except StoreUrlError as e:  # a URL built in code rather than given as a flag
        _error(command, f"error: {e}", debug)
        return 2
    except StoreError as e:
        _error(command, f"{type(e).__name__}: {e}", debug)
        return 1
    except FoldError as e:  # a sound chain whose events break the drafts' rules
        _error(command, f"the log cannot be folded into draft state: {e}", debug)
        return 1
    except Exception as e:  # the last resort: one line, never a traceback unless asked
        _error(command, f"unexpected error: {type(e).__name__}: {e}", debug)
        if not debug:
            print(f"{command}: run with --debug or RINGLOG_DEBUG=1 for details", file=sys.stderr)
        return 1


def _error(command: str, message: str, debug: bool) -> None:
    """One line on stderr (newlines in ``message`` folded), the traceback too when debugging."""
    if debug:
        traceback.print_exc()
    print(f"{command}: {' '.join(message.split())}", file=sys.stderr)


def _silence_stdout() -> None:
    # Python would report the broken pipe again when it flushes stdout at exit
    with contextlib.suppress(OSError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "serve":
        from server.main import serve

        try:
            settings = settings_from(args)
        except SettingError as e:  # a RINGLOG_* value (flags were checked while parsing)
            print(f"ringlog serve: error: {e} (see ringlog serve --help)", file=sys.stderr)
            return 2
        return serve(settings)
    if args.command == "tail":
        from ringlog.tail import tail

        return asyncio.run(tail(args.url, args.draft, args.since, args.token, args.user_id, args.pretty))
    return asyncio.run(_run_tool(args))


async def _open(url: str) -> Store:
    store = open_store(url)
    await store.open()
    return store


async def _run_tool(args: argparse.Namespace) -> int:
    if args.command == "copy":
        from server.copy_command import copy_log

        return await copy_log(args.source, args.target, force=args.force, progress=Progress("copy"))
    path = sqlite_path(args.db)
    if path is not None and not await asyncio.to_thread(os.path.exists, path):
        # opening would create an empty log, and 'verify' would then call it sound
        print(f"ringlog: no SQLite database at {path}", file=sys.stderr)
        return 2
    # Writing tools take the writer lock a running server holds (read-only ones need not), on
    # SQLite and PostgreSQL alike: StoreLocked names the store, and main() prints it on one line.
    lock: ToolLock | None = await acquire_tool_lock(args.db) if args.command in WRITING_TOOLS else None
    try:
        return await _run_on_store(args)
    finally:
        if lock is not None:
            await lock.release()


WRITING_TOOLS = frozenset({"rebuild"})
"""Subcommands that write to ``--db`` (``copy`` locks its target itself)."""


async def _run_on_store(args: argparse.Namespace) -> int:
    store = await _open(args.db)
    try:
        if args.command == "replay":
            return await _replay(store, args.draft, args.until_seq, args.json)
        if args.command == "log":
            return await _log(store, args.draft, args.since)
        if args.command == "verify":
            return await _verify(store)
        if args.command == "drafts":
            return await _drafts(store, args.json)
        if args.command == "rebuild":
            return await _rebuild(store)
        raise AssertionError(args.command)
    finally:
        await store.close()


async def _replay(store: Store, draft_id: str, until_seq: int | None, as_json: bool) -> int:
    from projections.fold import fold_all

    if until_seq is not None and until_seq < 1:
        print("ringlog: --until-seq must be at least 1", file=sys.stderr)
        return 2
    records = await store.read(draft_id, 0, until_seq)
    state = fold_all(None, [r.event() for r in records])
    if state is None:
        print(f"ringlog: draft {draft_id!r} not found", file=sys.stderr)
        return 1
    if until_seq is not None and state.seq < until_seq:
        print(f"ringlog: draft {draft_id!r} has only {state.seq} events", file=sys.stderr)
        return 1
    if as_json:
        sys.stdout.buffer.write(state.to_json() + b"\n")
    else:
        sys.stdout.write(
            orjson.dumps(state, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode() + "\n"
        )
    return 0


async def _log(store: Store, draft_id: str, since: int) -> int:
    after = max(since, 0)
    out = sys.stdout.buffer
    found = False
    while True:
        page = await store.read(draft_id, after, 1000)
        if not page:
            break
        found = True
        for record in page:
            out.write(record.body + b"\n")
        after = page[-1].seq
    out.flush()
    if not found and await store.head(draft_id) == 0:
        print(f"ringlog: draft {draft_id!r} not found", file=sys.stderr)
        return 1
    return 0


async def _drafts(store: Store, as_json: bool) -> int:
    """``ringlog drafts``: every draft's list row, folded from the whole log (exact, any store).

    Most recently updated first, like ``GET /v1/collab/drafts``, archived drafts included (an
    operator sees the whole log) and marked. JSON lines carry that endpoint's row keys (``id``,
    ``title``, ``seq``, ``updated_at``) and ``archived``; the table escapes control characters
    in titles so that one draft is always one line.
    """
    from eventstore.events import Event

    summaries: dict[str, DraftSummary] = {}
    after = 0
    while True:
        page = await store.read_all(after, 5000)
        if not page:
            break
        for record in page:
            event = Event.from_body(record.body)
            summaries[event.draft_id] = fold_summary(summaries.get(event.draft_id), event)
        after = page[-1].position
    rows = sorted(summaries.values(), key=lambda s: (s.updated_at, s.id), reverse=True)
    out = sys.stdout
    if as_json:
        for row in rows:
            out.write(orjson.dumps({**row.to_dict(), "archived": row.archived}).decode() + "\n")
        return 0
    if not rows:
        print("no drafts", file=sys.stderr)
        return 0
    cells = [
        (_cell(r.id, 60), _cell(r.title, 60), "yes" if r.archived else "no", str(r.seq), r.updated_at)
        for r in rows
    ]
    header = ("ID", "TITLE", "ARCHIVED", "SEQ", "UPDATED")
    widths = [max(len(c[i]) for c in [header, *cells]) for i in range(5)]
    for cell in [header, *cells]:
        out.write(
            f"{cell[0]:<{widths[0]}}  {cell[1]:<{widths[1]}}  {cell[2]:<{widths[2]}}  "
            f"{cell[3]:>{widths[3]}}  {cell[4]}".rstrip()
            + "\n"
        )
    return 0


def _cell(text: str, width: int) -> str:
    """``text`` on one line: control characters escaped, cut to ``width`` with an ellipsis."""
    shown = "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in text)
    return shown if len(shown) <= width else shown[: width - 1] + "…"


async def _rebuild(store: Store) -> int:
    """Verify the log, then rebuild snapshots and the feed index from it (exit 0), or refuse an
    unsound log before writing anything (exit 1). A rebuild folds each body by the draft the body
    names, so a row whose body disagrees with its own columns (written past ringlog) would
    otherwise be folded into another, sound draft's snapshot."""
    report = await verify_log(store, Progress("rebuild: verifying"))
    if not report.ok:
        print(f"ringlog rebuild: the log is unsound, nothing was rebuilt: {report.problem}", file=sys.stderr)
        return 1
    progress = Progress("rebuild")
    count = await rebuild(store, progress)
    progress.done(count)
    return 0


async def _verify(store: Store) -> int:
    report = await verify_log(store, Progress("verify"))
    if report.ok:
        print(f"ok: {report.events} events in {report.streams} drafts")
        return 0
    print(f"BAD: {report.problem}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
