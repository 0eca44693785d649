"""Benchmark client processes (not part of ringlog): many WebSockets, or one catch-up reader.

Started by ``scripts/benchlib.py``, one process per slice of the sockets, so the clients never
share a process (or a GIL) with the server under test. Talks JSON lines on stdin/stdout:

    python scripts/bench_clients.py sockets --url WS_URL [--url WS_URL ...] --n N [--protocol ws|socketio]
            [--offset K] [--subscribe DRAFT,DRAFT,...]
        -> {"event": "ready", ...}; then reads commands:
           mark                       forget what was received so far
           collect EXPECTED TIMEOUT   wait until each socket has EXPECTED stamped messages since
                                      the mark per draft it follows (or TIMEOUT s); reply with
                                      counts and latencies
           quit
        Socket k (0-based, in this process) connects to the k-th ``--url`` in turn, with ``{i}``
        in it replaced by K + k (one user id per socket, say). With ``--subscribe`` the URL is
        ``/v1/ws``: after ``connected`` the socket subscribes to every draft named, and is ready
        once each is answered ``subscribed``.
    python scripts/bench_clients.py catchup --url WS_URL --expect N
        -> {"events": N, "seconds": S}          (aiohttp client, orjson-decodes every event)
    python scripts/bench_clients.py catchup-raw --url WS_URL --expect N
        -> {"events": N, "seconds": S, "bytes": B, "decoded": D}
           (blocking socket: parses frame headers, takes each event's seq with a bytes search
           and checks it is the next one; fully decodes one event in 1,000 and the last one)

A stamped message carries ``@<unix time of the send>@`` in its text (the segment content):
latency = receive time - that stamp, both from ``time.time()`` on the same machine.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import random
import resource
import sys
import time
from typing import Any, cast
from urllib.parse import urlsplit

import aiohttp
import orjson

SAMPLE = 20_000  # latencies sent back per process at most (uniform sample)


def _raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


class RawSocket(asyncio.Protocol):
    """A minimal WebSocket client: handshake, unmasked server frames, masked pong/text replies.

    Far cheaper per message than a general client, so the server, not the client, is measured.
    """

    def __init__(self, fleet: Fleet, host: str, path: str) -> None:
        self.fleet = fleet
        self.pending = len(fleet.subscribe)  # subscriptions not yet answered ``subscribed``
        self.request = (
            f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {base64.b64encode(os.urandom(16)).decode()}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
        self.transport: asyncio.Transport | None = None
        self.buf = b""
        self.upgraded = False
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.slot = -1
        self.socketio = fleet.protocol == "socketio"
        self.ringlog = "/v1/ws" in path

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses: cast, do not isinstance-check
        self.transport = cast(asyncio.Transport, transport)
        self.transport.write(self.request)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.ready.done():
            self.ready.set_exception(ConnectionError("closed before ready"))

    def send(self, opcode: int, payload: bytes) -> None:
        assert self.transport is not None and len(payload) < 126
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.transport.write(bytes((0x80 | opcode, 0x80 | len(payload))) + mask + masked)

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data if self.buf else data
        if not self.upgraded:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                self.buf = buf
                return
            if not buf.startswith(b"HTTP/1.1 101"):
                if not self.ready.done():
                    self.ready.set_exception(ConnectionError(buf[:40].decode(errors="replace")))
                return
            self.upgraded = True
            buf = buf[end + 4 :]
            if not self.ringlog and not self.socketio and not self.ready.done():
                self.ready.set_result(None)
        pos, n = 0, len(buf)
        now = time.time()
        fleet = self.fleet
        while n - pos >= 2:
            b0, b1 = buf[pos], buf[pos + 1] & 0x7F
            head = 2
            if b1 == 126:
                if n - pos < 4:
                    break
                b1 = int.from_bytes(buf[pos + 2 : pos + 4], "big")
                head = 4
            elif b1 == 127:
                if n - pos < 10:
                    break
                b1 = int.from_bytes(buf[pos + 2 : pos + 10], "big")
                head = 10
            if n - pos < head + b1:
                break
            payload = buf[pos + head : pos + head + b1]
            pos += head + b1
            opcode = b0 & 0x0F
            if opcode == 0x9:
                self.send(0xA, payload)
            elif opcode == 0x1:
                self.on_text(payload, now, fleet)
        self.buf = buf[pos:]

    def on_text(self, payload: bytes, now: float, fleet: Fleet) -> None:
        i = payload.find(b"@")
        if i >= 0 and self.slot >= 0:
            j = payload.find(b"@", i + 1)
            fleet.counts[self.slot] += 1
            fleet.latencies.append(now - float(payload[i + 1 : j]))
            if not fleet.first:
                fleet.first = now
            fleet.last = now
            return
        if self.socketio:
            if payload == b"2":
                self.send(0x1, b"3")
            elif payload.startswith(b"0{"):
                self.send(0x1, b"40")
            elif payload.startswith(b"40") and not self.ready.done():
                self.ready.set_result(None)
        elif self.ringlog and not self.ready.done():
            if b'"connected"' in payload:
                for draft_id in fleet.subscribe:
                    self.send(0x1, b'{"type":"subscribe","draft_id":"' + draft_id.encode() + b'"}')
            elif b'"subscribed"' in payload:
                self.pending -= 1
            elif b'"error"' in payload:
                self.ready.set_exception(ConnectionError(payload[:200].decode(errors="replace")))
                return
            else:
                return
            if self.pending <= 0:
                self.ready.set_result(None)


class Fleet:
    def __init__(
        self,
        urls: list[str],
        n: int,
        protocol: str,
        concurrency: int,
        offset: int = 0,
        subscribe: tuple[str, ...] = (),
    ) -> None:
        parts = urlsplit(urls[0])
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        self.paths = [urlsplit(u).path + (f"?{urlsplit(u).query}" if urlsplit(u).query else "") for u in urls]
        self.offset = offset
        self.subscribe = subscribe
        self.per_socket = max(1, len(subscribe))  # drafts each socket follows
        self.n = n
        self.protocol = protocol
        self.concurrency = concurrency
        self.counts: list[int] = []
        self.latencies: list[float] = []
        self.first = 0.0
        self.last = 0.0
        self.failed = 0
        self.sockets: list[RawSocket] = []

    def mark(self) -> None:
        self.counts = [0] * len(self.counts)
        self.latencies = []
        self.first = self.last = 0.0

    async def connect_all(self) -> float:
        gate = asyncio.Semaphore(self.concurrency)
        loop = asyncio.get_running_loop()
        started = time.perf_counter()

        async def one(k: int) -> None:
            path = self.paths[k % len(self.paths)].replace("{i}", str(self.offset + k))
            async with gate:
                try:
                    _, sock = await loop.create_connection(
                        lambda: RawSocket(self, f"{self.host}:{self.port}", path), self.host, self.port
                    )
                    await asyncio.wait_for(sock.ready, 60)
                except (ConnectionError, TimeoutError, OSError):
                    self.failed += 1
                    return
            sock.slot = len(self.counts)
            self.counts.append(0)
            self.sockets.append(sock)

        await asyncio.gather(*(one(k) for k in range(self.n)))
        return time.perf_counter() - started

    async def collect(self, expected: int, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        want = expected * self.per_socket * len(self.counts)
        while sum(self.counts) < want and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        lat = self.latencies
        sample = lat if len(lat) <= SAMPLE else random.sample(lat, SAMPLE)
        return {
            "received": sum(self.counts),
            "sockets": len(self.counts),
            "complete": sum(1 for c in self.counts if c >= expected * self.per_socket),
            "first": self.first,
            "last": self.last,
            "weight": len(lat),
            "sample": sample,
        }


async def run_sockets(args: argparse.Namespace) -> None:
    subscribe = tuple(d for d in args.subscribe.split(",") if d)
    fleet = Fleet(args.url, args.n, args.protocol, args.concurrency, args.offset, subscribe)
    seconds = await fleet.connect_all()
    _reply({"event": "ready", "connected": len(fleet.counts), "failed": fleet.failed, "seconds": seconds})
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while True:
        line = (await reader.readline()).decode().split()
        if not line or line[0] == "quit":
            break
        if line[0] == "mark":
            fleet.mark()
            _reply({"event": "marked"})
        elif line[0] == "collect":
            _reply(await fleet.collect(int(line[1]), float(line[2])))
    for sock in fleet.sockets:
        if sock.transport is not None:
            sock.transport.abort()  # drop at once: no close handshake with 10k sockets


async def run_catchup(args: argparse.Namespace) -> None:
    async with aiohttp.ClientSession() as session:
        started = time.perf_counter()
        events = 0
        async with session.ws_connect(args.url, max_msg_size=0) as ws:
            async for msg in ws:
                if msg.type != aiohttp.WSMsgType.TEXT:
                    break
                event = orjson.loads(msg.data)  # a real client decodes every event
                if "seq" in event:
                    events += 1
                    if events >= args.expect:
                        break
        seconds = time.perf_counter() - started
    _reply({"events": events, "seconds": seconds})


def run_catchup_raw(args: argparse.Namespace) -> None:
    """Receive ``--expect`` events as fast as the socket delivers them (no asyncio, no decoding).

    Counts text frames that carry an event, checks seqs are contiguous from the first one by
    finding ``"seq":`` in each payload (no JSON decode), and orjson-decodes a sample to check the
    bytes search agrees with the JSON. Client-side work per event is ~1 µs, so the server is
    what is measured.
    """
    import socket

    parts = urlsplit(args.url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    started = time.perf_counter()
    sock = socket.create_connection((host, port), timeout=120)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
    sock.sendall(
        (
            f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {base64.b64encode(os.urandom(16)).decode()}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    buf = bytearray()
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed during the handshake")
        buf += chunk
    end = buf.index(b"\r\n\r\n")
    if not buf.startswith(b"HTTP/1.1 101"):
        raise ConnectionError(bytes(buf[:60]).decode(errors="replace"))
    del buf[: end + 4]
    events = decoded = received = 0
    last_seq = -1
    view = bytearray(1 << 20)
    mv = memoryview(view)
    key = b'"seq":'
    done = False
    try:
        while not done:
            n = len(buf)
            pos = 0
            while n - pos >= 2:
                b1 = buf[pos + 1] & 0x7F
                head = 2
                if b1 == 126:
                    if n - pos < 4:
                        break
                    b1 = (buf[pos + 2] << 8) | buf[pos + 3]
                    head = 4
                elif b1 == 127:
                    if n - pos < 10:
                        break
                    b1 = int.from_bytes(buf[pos + 2 : pos + 10], "big")
                    head = 10
                start, stop = pos + head, pos + head + b1
                if stop > n:
                    break
                opcode = buf[pos] & 0x0F
                pos = stop
                if opcode == 0x8:
                    raise ConnectionError(f"server closed the socket: {bytes(buf[start:stop])!r}")
                if opcode != 0x1:
                    continue
                i = buf.find(key, start, stop)
                if i < 0:
                    continue  # "connected" and other non-event messages
                j = i + 6
                k = j
                while 48 <= buf[k] <= 57:
                    k += 1
                seq = int(buf[j:k])
                if last_seq >= 0 and seq != last_seq + 1:
                    raise RuntimeError(f"seq {seq} after {last_seq}: not contiguous")
                last_seq = seq
                events += 1
                if events % 1000 == 1 or events >= args.expect:
                    if orjson.loads(bytes(buf[start:stop]))["seq"] != seq:
                        raise RuntimeError(f"the bytes search and the JSON disagree at seq {seq}")
                    decoded += 1
                if events >= args.expect:
                    done = True
                    break
            del buf[:pos]
            if done:
                break
            got = sock.recv_into(mv)
            if not got:
                break
            received += got
            buf += mv[:got]
        seconds = time.perf_counter() - started
    finally:
        sock.close()
    _reply(
        {"events": events, "seconds": seconds, "bytes": received, "decoded": decoded, "last_seq": last_seq}
    )


def _reply(obj: dict[str, Any]) -> None:
    sys.stdout.write(orjson.dumps(obj).decode() + "\n")
    sys.stdout.flush()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="mode", required=True)
    s = sub.add_parser("sockets")
    s.add_argument("--url", required=True, action="append", help="given more than once: sockets in turn")
    s.add_argument("--n", type=int, required=True)
    s.add_argument("--offset", type=int, default=0, help="first value of {i} in the URLs")
    s.add_argument("--subscribe", default="", help="/v1/ws: draft ids to subscribe to, comma-separated")
    s.add_argument("--protocol", choices=["ws", "socketio"], default="ws")
    s.add_argument("--concurrency", type=int, default=100)
    c = sub.add_parser("catchup")
    c.add_argument("--url", required=True)
    c.add_argument("--expect", type=int, required=True)
    r = sub.add_parser("catchup-raw")
    r.add_argument("--url", required=True)
    r.add_argument("--expect", type=int, required=True)
    args = parser.parse_args()
    _raise_nofile()
    if args.mode == "catchup-raw":
        run_catchup_raw(args)
        return
    runner = run_sockets if args.mode == "sockets" else run_catchup
    try:
        import uvloop

        uvloop.run(runner(args))
    except ImportError:
        asyncio.run(runner(args))


if __name__ == "__main__":
    main()
