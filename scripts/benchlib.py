"""Shared pieces of ``scripts/bench.py`` and ``scripts/bench_live.py`` (not part of ringlog).

* servers under test as subprocesses (``ringlog serve`` and the baselines of ``bench_peers.py``),
  with their RSS and CPU time read from ``/proc``;
* socket fleets in separate client processes (``bench_clients.py``), steady and burst fan-out;
* HTTP load with ``wrk`` (a Lua script gives every request its own Idempotency-Key);
* statistics (min / median / max over repetitions, latency percentiles) and Markdown sections.
"""

from __future__ import annotations

import asyncio
import os
import platform
import re
import resource
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = ROOT / "scripts"
BENCHMARKS_MD = ROOT / "docs" / "BENCHMARKS.md"
OWNER = "bench-owner"
PAD = "x" * 100  # segment content ~130 chars: ~330-byte events, like LIMITS.md's ~300
CLK_TCK = os.sysconf("SC_CLK_TCK")


# -- machine and statistics -----------------------------------------------------------------------


def raise_nofile() -> int:
    """Raise this process's (and its children's) open-file limit to the hard limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def machine_info() -> str:
    """One line: date, cores, Python, SQLite, aiohttp, event loop."""
    try:
        import uvloop

        loop = f"uvloop {getattr(uvloop, '__version__', '?')}"
    except ImportError:
        loop = "asyncio"
    cpu = ""
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return (
        f"{time.strftime('%Y-%m-%d %H:%M %Z')}; {os.cpu_count()} cores ({cpu}); "
        f"{platform.python_implementation()} {platform.python_version()}; SQLite {sqlite3.sqlite_version}; "
        f"aiohttp {aiohttp.__version__}; servers on {loop}; RLIMIT_NOFILE {raise_nofile()}"
    )


def pct(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0–100), nearest rank."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1))))
    return ordered[k]


@dataclass
class Series:
    """Repetitions of one figure."""

    values: list[float] = field(default_factory=list)

    def add(self, value: float) -> None:
        self.values.append(value)

    @property
    def median(self) -> float:
        return statistics.median(self.values) if self.values else float("nan")

    def cells(self, fmt: str = "{:,.0f}", sep: str = " | ") -> str:
        """min, median, max as table cells (``sep`` " / " keeps them in one cell)."""
        if not self.values:
            return sep.join("–" * 3)
        return sep.join(fmt.format(v) for v in (min(self.values), self.median, max(self.values)))


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}×" if b and a == a and b == b else "–"


def write_sections(path: Path, sections: dict[str, str], title: str = "# Benchmarks") -> None:
    """Replace (or append) the named ``## `` sections of ``path``, keeping every other section."""
    text = path.read_text() if path.exists() else title + "\n"
    for heading, body in sections.items():
        pattern = re.compile(rf"^{re.escape(heading)}\n.*?(?=^## |\Z)", re.S | re.M)
        block = body.rstrip("\n") + "\n\n"
        if pattern.search(text):
            text = pattern.sub(lambda _m, b=block: b, text)  # type: ignore[misc]
        else:
            text = text.rstrip("\n") + "\n\n" + block
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text.rstrip("\n") + "\n")


def read_section(path: Path, heading: str) -> str | None:
    """The ``heading`` section of ``path`` (with its heading), or None."""
    if not path.exists():
        return None
    m = re.search(rf"^{re.escape(heading)}\n.*?(?=^## |\Z)", path.read_text(), re.S | re.M)
    return m.group(0).rstrip("\n") if m else None


# -- servers --------------------------------------------------------------------------------------

LISTENING = re.compile(rb"listening on (http://\S+)")


class Server:
    """A server subprocess that prints ``... listening on http://HOST:PORT`` when ready."""

    def __init__(self, name: str, cmd: list[str], env: dict[str, str] | None = None) -> None:
        self.name = name
        self.cmd = cmd
        self.env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""
        self.log = tempfile.NamedTemporaryFile(prefix=f"bench-{name}-", suffix=".log", delete=False)  # noqa: SIM115

    @property
    def ws_base(self) -> str:
        return self.url.replace("http://", "ws://")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, timeout: float = 60.0) -> Server:
        self.proc = subprocess.Popen(
            self.cmd, stdout=subprocess.PIPE, stderr=self.log, env=self.env, cwd=ROOT
        )
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        os.set_blocking(self.proc.stdout.fileno(), False)
        buf = b""
        while time.monotonic() < deadline:
            chunk = self.proc.stdout.read(4096)
            if chunk:
                buf += chunk
                m = LISTENING.search(buf)
                if m:
                    self.url = m.group(1).decode()
                    return self
            elif self.proc.poll() is not None:
                break
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"{self.name} did not start: {Path(self.log.name).read_text()[-2000:]}")

    def rss_kib(self) -> int:
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

    def cpu_seconds(self) -> float:
        with open(f"/proc/{self.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
        if self.proc is not None and self.proc.stdout is not None:
            self.proc.stdout.close()
        self.log.close()
        os.unlink(self.log.name)


def ringlog_server(db: str, name: str = "ringlog", *extra: str) -> Server:
    """``ringlog serve`` on an ephemeral loopback port, limits off, dev auth on."""
    cmd = [
        sys.executable, "-m", "server.cli", "serve", "--host", "127.0.0.1", "--port", "0",
        "--db", db, "--dev-auth", "--rate-limit", "0", "--max-sockets-per-user", "0", *extra,
    ]  # fmt: skip
    return Server(name, cmd)


def peer_server(kind: str) -> Server:
    """A baseline from ``bench_peers.py``: noop, raw, spec or socketio."""
    return Server(kind, [sys.executable, str(SCRIPTS / "bench_peers.py"), kind])


# -- ringlog over HTTP ----------------------------------------------------------------------------


def owner_headers(user: str = OWNER) -> dict[str, str]:
    return {"X-User-Id": user, "Content-Type": "application/json"}


async def create_draft(session: aiohttp.ClientSession, base: str, user: str = OWNER) -> str:
    async with session.post(
        f"{base}/v1/collab/drafts", data=orjson.dumps({"title": f"bench {user}"}), headers=owner_headers(user)
    ) as r:
        if r.status != 201:
            raise RuntimeError(f"create draft: {r.status} {await r.text()}")
        body = await r.json(loads=orjson.loads)
        return str(body["data"]["id"])


def stamped_content() -> bytes:
    """A segment body carrying its send time (see ``bench_clients.py``)."""
    return orjson.dumps({"content": f"@{time.time():.6f}@{PAD}"})


# -- socket fleets --------------------------------------------------------------------------------


class Fleet:
    """N sockets spread over several client processes.

    By default process i connects all its sockets to ``urls[i % len(urls)]`` (one node each).
    With ``every_url`` each process gives its sockets every URL in turn, with ``{i}`` replaced by
    the socket's number in the whole fleet (one user id per socket, say); with ``subscribe`` the
    URLs are ``/v1/ws`` and every socket subscribes to each of those drafts (``collect`` then
    counts per draft followed).
    """

    def __init__(
        self,
        urls: Sequence[str],
        n: int,
        procs: int,
        protocol: str = "ws",
        concurrency: int = 100,
        *,
        every_url: bool = False,
        subscribe: Sequence[str] = (),
    ) -> None:
        self.urls = list(urls)
        self.n = n
        self.procs_n = max(1, min(procs, n))
        self.protocol = protocol
        self.concurrency = concurrency
        self.every_url = every_url
        self.subscribe = list(subscribe)
        self.procs: list[asyncio.subprocess.Process] = []
        self.connected = 0
        self.failed = 0
        self.connect_seconds = 0.0

    async def _line(self, proc: asyncio.subprocess.Process, timeout: float) -> dict[str, Any]:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), timeout)
        if not line:
            raise RuntimeError("a client process exited early")
        result: dict[str, Any] = orjson.loads(line)
        return result

    async def start(self, timeout: float = 120.0) -> Fleet:
        share = [
            self.n // self.procs_n + (1 if i < self.n % self.procs_n else 0) for i in range(self.procs_n)
        ]
        offset = 0
        for i, n in enumerate(share):
            urls = self.urls if self.every_url else [self.urls[i % len(self.urls)]]
            extra = ["--offset", str(offset)]
            if self.subscribe:
                extra += ["--subscribe", ",".join(self.subscribe)]
            offset += n
            self.procs.append(
                await asyncio.create_subprocess_exec(
                    sys.executable,
                    str(SCRIPTS / "bench_clients.py"),
                    "sockets",
                    *(a for u in urls for a in ("--url", u)),
                    "--n",
                    str(n),
                    "--protocol",
                    self.protocol,
                    "--concurrency",
                    str(self.concurrency),
                    *extra,
                    stdin=asyncio.subprocess.PIPE,
                    stdout=asyncio.subprocess.PIPE,
                    limit=2**24,
                )
            )
        ready = await asyncio.gather(*(self._line(p, timeout) for p in self.procs))
        self.connected = sum(r["connected"] for r in ready)
        self.failed = sum(r["failed"] for r in ready)
        self.connect_seconds = max(r["seconds"] for r in ready)
        await asyncio.sleep(0.3)  # let the last subscriptions settle
        return self

    async def _all(self, command: str, timeout: float) -> list[dict[str, Any]]:
        for p in self.procs:
            assert p.stdin is not None
            p.stdin.write(command.encode() + b"\n")
            await p.stdin.drain()
        return list(await asyncio.gather(*(self._line(p, timeout) for p in self.procs)))

    def cpu_seconds(self) -> float:
        """CPU seconds (user + system) taken so far by the fleet's client processes, from ``/proc``."""
        total = 0.0
        for p in self.procs:
            try:
                with open(f"/proc/{p.pid}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue  # ended
            total += (int(fields[11]) + int(fields[12])) / CLK_TCK
        return total

    async def mark(self) -> None:
        await self._all("mark", 30)

    async def collect(self, expected: int, timeout: float) -> dict[str, Any]:
        parts = await self._all(f"collect {expected} {timeout}", timeout + 30)
        sample: list[float] = []
        for part in parts:
            sample.extend(part["sample"])
        firsts = [p["first"] for p in parts if p["first"]]
        return {
            "received": sum(p["received"] for p in parts),
            "complete": sum(p["complete"] for p in parts),
            "first": min(firsts) if firsts else 0.0,
            "last": max(p["last"] for p in parts),
            "sample": sample,
        }

    async def stop(self) -> None:
        for p in self.procs:
            if p.returncode is None and p.stdin is not None:
                with _suppress():
                    p.stdin.write(b"quit\n")
                    await p.stdin.drain()
        for p in self.procs:
            try:
                await asyncio.wait_for(p.wait(), 20)
            except TimeoutError:
                p.kill()
                await p.wait()

    async def __aenter__(self) -> Fleet:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


class _suppress:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> bool:
        return True


@dataclass
class FanoutFigures:
    """Fan-out repetitions for one server at one socket count."""

    steady_p50: Series = field(default_factory=Series)
    steady_p99: Series = field(default_factory=Series)
    steady_lost: int = 0
    burst_rate: Series = field(default_factory=Series)
    burst_p50: Series = field(default_factory=Series)
    burst_p99: Series = field(default_factory=Series)
    burst_cpu_us: Series = field(default_factory=Series)
    burst_lost: int = 0
    connected: int = 0


async def _gated(gate: asyncio.Semaphore, post: Callable[[], Awaitable[None]]) -> None:
    async with gate:
        await post()


class Cluster:
    """Several servers measured as one: CPU seconds summed over all of them."""

    def __init__(self, servers: Sequence[Server]) -> None:
        self.servers = list(servers)

    def cpu_seconds(self) -> float:
        return sum(s.cpu_seconds() for s in self.servers)


async def fanout(
    server: Server | Cluster,
    fleet: Fleet,
    post_urls: Sequence[str],
    *,
    headers: dict[str, str],
    steady_rate: float,
    steady_seconds: float,
    burst: int,
    reps: int,
    figures: FanoutFigures,
) -> FanoutFigures:
    """Steady (paced) then burst appends through HTTP POSTs; the fleet measures delivery."""
    figures.connected = fleet.connected
    connector = aiohttp.TCPConnector(limit=64)
    async with aiohttp.ClientSession(connector=connector) as session:
        turn = 0

        async def post() -> None:
            nonlocal turn
            url = post_urls[turn % len(post_urls)]
            turn += 1
            async with session.post(url, data=stamped_content(), headers=headers) as r:
                if r.status >= 300:
                    raise RuntimeError(f"POST {url}: {r.status} {await r.text()}")
                await r.read()

        await post()  # warm-up (and a first delivery to every socket)
        await fleet.collect(1, 10)
        for _ in range(reps):
            # steady: appends at a fixed rate
            await fleet.mark()
            count = max(1, int(steady_rate * steady_seconds))
            start = time.monotonic()
            tasks = []
            for i in range(count):
                delay = start + i / steady_rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                tasks.append(asyncio.ensure_future(post()))
            await asyncio.gather(*tasks)
            got = await fleet.collect(count, 30)
            figures.steady_p50.add(pct(got["sample"], 50) * 1000)
            figures.steady_p99.add(pct(got["sample"], 99) * 1000)
            figures.steady_lost += count * fleet.connected - got["received"]
            # burst: as fast as the server takes them, 16 in flight
            await fleet.mark()
            cpu0 = server.cpu_seconds()
            t0 = time.time()
            gate = asyncio.Semaphore(16)
            await asyncio.gather(*(_gated(gate, post) for _ in range(burst)))
            got = await fleet.collect(burst, 60)
            cpu = server.cpu_seconds() - cpu0
            received = got["received"]
            figures.burst_rate.add(received / max(1e-9, got["last"] - t0))
            figures.burst_p50.add(pct(got["sample"], 50) * 1000)
            figures.burst_p99.add(pct(got["sample"], 99) * 1000)
            figures.burst_cpu_us.add(cpu / max(1, received) * 1e6)
            figures.burst_lost += burst * fleet.connected - received
            await asyncio.sleep(0.2)
    return figures


# -- HTTP load with wrk ---------------------------------------------------------------------------

WRK_LUA = r"""
local targets = TARGETS
local run = "RUN"
local nthreads = NTHREADS
local counter = 1
function setup(thread)
  thread:set("tid", counter)
  counter = counter + 1
end
function init(args)
  n = 0
  per = math.max(1, math.floor(#targets / nthreads))
end
function request()
  n = n + 1
  local t = targets[((tid - 1) * per + (n % per)) % #targets + 1]
  local headers = {}
  headers["Content-Type"] = "application/json"
  headers["X-User-Id"] = t[2]
  headers["Idempotency-Key"] = run .. "-" .. tid .. "-" .. n
  return wrk.format("POST", t[1], headers, '{"content":"a benchmark segment, number ' .. n .. '"}')
end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%d,"duration_us":%d,"connect":%d,"read":%d,"write":%d,"status":%d,' ..
    '"timeout":%d,"p50_us":%d,"p99_us":%d}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
"""


def have_wrk() -> bool:
    return shutil.which("wrk") is not None


LOAD_GENERATOR = "`wrk -t2`"
"""Which HTTP load generator this run uses (set by :func:`choose_load_generator`)."""


def choose_load_generator() -> str:
    """wrk if present; else try ``apt-get install -y wrk``; else the Python generator. Says which."""
    global LOAD_GENERATOR
    if not have_wrk() and shutil.which("apt-get") is not None and os.geteuid() == 0:
        print("wrk not found: trying apt-get install -y wrk", file=sys.stderr, flush=True)
        subprocess.run(
            ["apt-get", "install", "-y", "-q", "wrk"], capture_output=True, timeout=300, check=False
        )
    if have_wrk():
        LOAD_GENERATOR = "`wrk -t2`"
    else:
        print(
            "wrk is not available (apt-get install -y wrk): using the Python load generator instead "
            "(same request mix; it needs more CPU per request, so HTTP figures are lower and client-bound)",
            file=sys.stderr,
            flush=True,
        )
        LOAD_GENERATOR = "the Python load generator (aiohttp, 1 process; wrk was not available)"
    return LOAD_GENERATOR


BENCH_EXTRA = {
    "uvloop": "uvloop>=0.19",
    "socketio": "python-socketio>=5.10",
    "eventsourcing": "eventsourcing>=9.2",
}
"""The ``bench`` extra of pyproject.toml: module imported → requirement that provides it."""


def ensure_bench_extra() -> list[str]:
    """Install the ``bench`` extra into this interpreter when a module of it is missing; says so.

    The README's install is ``pip install -e .`` (or ``.[test]``), which leaves out the peers the
    benchmark compares with (python-socketio, eventsourcing) and uvloop, so a fresh machine would
    stop half-way. Returns the modules still missing after the attempt (their rows are skipped,
    and the run says so).
    """
    import importlib.util

    missing = [m for m in BENCH_EXTRA if importlib.util.find_spec(m) is None]
    if missing:
        wanted = [BENCH_EXTRA[m] for m in missing]
        print(
            f"the bench extra is missing {', '.join(missing)}: installing {' '.join(wanted)} with pip",
            file=sys.stderr,
            flush=True,
        )
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "-q", *wanted],
            capture_output=True,
            timeout=600,
            check=False,
        )
        importlib.invalidate_caches()
        missing = [m for m in missing if importlib.util.find_spec(m) is None]
        if missing:
            print(f"still missing {', '.join(missing)}: their rows are skipped", file=sys.stderr, flush=True)
        else:
            print(f"installed {', '.join(wanted)}", file=sys.stderr, flush=True)
    return missing


async def python_load(
    url: str, targets: Sequence[tuple[str, str]], connections: int, seconds: float
) -> dict[str, Any]:
    """wrk's request mix from Python: each connection POSTs to its target with a fresh key; wrk's result shape."""
    run = uuid.uuid4().hex[:12]
    latencies: list[float] = []
    counts = {"requests": 0, "status": 0, "connect": 0, "read": 0, "write": 0, "timeout": 0}
    deadline = time.monotonic() + seconds
    started = time.monotonic()
    connector = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=10)) as session:

        async def client(c: int) -> None:
            path, user = targets[c % len(targets)]
            headers = {"Content-Type": "application/json", "X-User-Id": user}
            n = 0
            while time.monotonic() < deadline:
                n += 1
                headers["Idempotency-Key"] = f"{run}-{c}-{n}"
                body = orjson.dumps({"content": f"a benchmark segment, number {n}"})
                t0 = time.perf_counter()
                try:
                    async with session.post(url + path, data=body, headers=headers) as r:
                        await r.read()
                        if r.status >= 400:
                            counts["status"] += 1
                except TimeoutError:
                    counts["timeout"] += 1
                except aiohttp.ClientError:
                    counts["read"] += 1
                counts["requests"] += 1
                latencies.append(time.perf_counter() - t0)

        await asyncio.gather(*(client(c) for c in range(connections)))
    return {
        **counts,
        "duration_us": int((time.monotonic() - started) * 1e6),
        "p50_us": int(pct(latencies, 50) * 1e6) if latencies else 0,
        "p99_us": int(pct(latencies, 99) * 1e6) if latencies else 0,
    }


@dataclass
class HttpFigures:
    rate: Series = field(default_factory=Series)
    p50: Series = field(default_factory=Series)
    p99: Series = field(default_factory=Series)
    errors: int = 0


async def wrk(
    url: str, targets: Sequence[tuple[str, str]], connections: int, seconds: float, threads: int = 2
) -> dict[str, Any]:
    """POST to ``targets`` ((path, user) pairs) for ``seconds`` with ``connections`` keep-alive connections.

    Without wrk (see :func:`choose_load_generator`) the Python generator does the same."""
    if not have_wrk():
        return await python_load(url, targets, connections, seconds)
    lua = WRK_LUA.replace("TARGETS", "{" + ",".join(f'{{"{p}","{u}"}}' for p, u in targets) + "}")
    lua = lua.replace("RUN", uuid.uuid4().hex[:12]).replace("NTHREADS", str(threads))
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(lua)
    try:
        proc = await asyncio.create_subprocess_exec(
            "wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds:g}s", "--timeout", "10s", "-s", f.name, url,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await asyncio.wait_for(proc.communicate(), seconds + 60)
    finally:
        os.unlink(f.name)
    m = re.search(rb"WRKJSON (\{.*\})", out)
    if not m:
        raise RuntimeError(f"wrk failed: {out[-500:]!r} {err[-500:]!r}")
    result: dict[str, Any] = orjson.loads(m.group(1))
    return result


async def http_appends(
    urls: Sequence[str],
    targets: Sequence[Sequence[tuple[str, str]]],
    *,
    connections: int,
    seconds: float,
    reps: int,
    figures: HttpFigures,
) -> HttpFigures:
    """wrk against each url at once (``connections`` split between them); sums the rates."""
    per = max(1, connections // len(urls))
    for _ in range(reps):
        results = await asyncio.gather(*(wrk(u, t, per, seconds) for u, t in zip(urls, targets, strict=True)))
        ok = sum(r["requests"] - r["status"] for r in results)
        duration = max(r["duration_us"] for r in results) / 1e6
        figures.rate.add(ok / duration)
        figures.p50.add(max(r["p50_us"] for r in results) / 1000)
        figures.p99.add(max(r["p99_us"] for r in results) / 1000)
        figures.errors += sum(
            r["status"] + r["connect"] + r["read"] + r["write"] + r["timeout"] for r in results
        )
    return figures


async def ringlog_targets(bases: Sequence[str], clients: int) -> list[list[tuple[str, str]]]:
    """One draft per client (its creator holds the ring), created through ``bases`` in turn."""
    per_base: list[list[tuple[str, str]]] = [[] for _ in bases]
    async with aiohttp.ClientSession() as session:
        for i in range(clients):
            k = i % len(bases)
            user = f"bench-writer-{i}"
            draft = await create_draft(session, bases[k], user)
            per_base[k].append((f"/v1/collab/drafts/{draft}/segments", user))
    return per_base


# -- one fan-out measurement, server start to stop ------------------------------------------------


@dataclass
class FanoutPlan:
    sockets: int
    procs: int
    steady_rate: float
    steady_seconds: float
    burst: int
    reps: int


async def fanout_ringlog(db: str, plan: FanoutPlan, nodes: int = 1) -> tuple[FanoutFigures, float]:
    """ringlog (``nodes`` servers on one store): sockets spread over the nodes, appends through each in turn."""
    servers = [ringlog_server(db, f"ringlog-{i}") for i in range(nodes)]
    try:
        for s in servers:
            s.start()
        async with aiohttp.ClientSession() as session:
            draft = await create_draft(session, servers[0].url)
        rss0 = sum(s.rss_kib() for s in servers)
        ws_urls = [f"{s.ws_base}/v1/ws/drafts/{draft}?user_id={OWNER}" for s in servers]
        async with Fleet(ws_urls, plan.sockets, plan.procs) as fleet:
            rss = (sum(s.rss_kib() for s in servers) - rss0) / max(1, fleet.connected)
            figures = await fanout(
                Cluster(servers),  # CPU per delivery of the whole cluster, not of one node
                fleet,
                [f"{s.url}/v1/collab/drafts/{draft}/segments" for s in servers],
                headers=owner_headers(),
                steady_rate=plan.steady_rate,
                steady_seconds=plan.steady_seconds,
                burst=plan.burst,
                reps=plan.reps,
                figures=FanoutFigures(),
            )
    finally:
        for s in servers:
            s.__exit__()
    return figures, rss


async def fanout_peer(kind: str, plan: FanoutPlan) -> tuple[FanoutFigures, float]:
    """A baseline of ``bench_peers.py`` (raw, spec or socketio) with the same sockets and appends."""
    with peer_server(kind) as server:
        rss0 = server.rss_kib()
        if kind == "socketio":
            urls, protocol = [f"{server.ws_base}/socket.io/?EIO=4&transport=websocket"], "socketio"
        else:
            urls, protocol = [f"{server.ws_base}/ws"], "ws"
        async with Fleet(urls, plan.sockets, plan.procs, protocol) as fleet:
            rss = (server.rss_kib() - rss0) / max(1, fleet.connected)
            figures = await fanout(
                server,
                fleet,
                [f"{server.url}/publish"],
                headers={"Content-Type": "application/json"},
                steady_rate=plan.steady_rate,
                steady_seconds=plan.steady_seconds,
                burst=plan.burst,
                reps=plan.reps,
                figures=FanoutFigures(),
            )
    return figures, rss


def fanout_rows(results: Sequence[tuple[str, FanoutFigures, float]], ceiling: FanoutFigures) -> list[str]:
    """Markdown rows: one per server, with ratios to ``ceiling`` (deliveries/s, median)."""
    rows = [
        "| server | sockets | burst deliveries/s (min / med / max) | vs raw | burst p50 / p99 ms (med) "
        "| server CPU µs per delivery (med) | paced p50 / p99 ms (min / med / max of p99) | lost | RSS KiB/socket |",
        "|---|---:|---|---:|---|---:|---|---:|---:|",
    ]
    for label, f, rss in results:
        rss_cell = "–" if rss != rss else f"{rss:.1f}"  # NaN: not measured in this row
        rows.append(
            f"| {label} | {f.connected:,} | {f.burst_rate.cells(sep=' / ')} | {ratio(f.burst_rate.median, ceiling.burst_rate.median)} "
            f"| {f.burst_p50.median:.0f} / {f.burst_p99.median:.0f} | {f.burst_cpu_us.median:.2f} "
            f"| {f.steady_p50.median:.1f} / {f.steady_p99.cells('{:.1f}', ' / ')} | {f.steady_lost + f.burst_lost} | {rss_cell} |"
        )
    return rows
