"""A lean sink: answers every POST as TikTok accepts a request, at almost no cost per event.

The drain benchmark measures the daemon and its baseline against this sink instead of the fake
TikTok, whose validation costs CPU per event on the same two cores: here a request costs
reading its bytes, counting its events (``bytes.count`` of ``"event_id"``) and writing one fixed
answer, ``{"code":0,...}``, after --latency-ms if given (the round trip to TikTok). HTTP/1.1
with keep-alive and Content-Length bodies only, as aiohttp sends them; loopback only.

``GET /_sink/stats`` answers ``{"requests": n, "events": n}``; ``POST /_sink/reset`` zeroes them.
It prints ``listening on http://127.0.0.1:<port>`` once ready.

Usage: python bench/sink.py [--port 0] [--latency-ms 0]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import urllib.request
from pathlib import Path

ACCEPTED = b'{"code":0,"message":"OK","request_id":"sink","data":{}}'
HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"


def answer(body: bytes) -> bytes:
    return HEAD % len(body) + body


class Counts:
    """What the sink has received since the last reset."""

    def __init__(self) -> None:
        self.requests = 0
        self.events = 0


class SinkProtocol(asyncio.Protocol):
    """One keep-alive connection: requests parsed by Content-Length, answered in order."""

    def __init__(self, counts: Counts, latency_s: float) -> None:
        self.counts = counts
        self.latency_s = latency_s
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while (end := self.buffer.find(b"\r\n\r\n")) >= 0:
            head = bytes(self.buffer[:end]).lower()
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name == b"content-length":
                    length = int(value)
            if len(self.buffer) < end + 4 + length:
                return  # the rest of the body is still on its way
            body = bytes(self.buffer[end + 4 : end + 4 + length])
            del self.buffer[: end + 4 + length]
            self.respond(head.split(b" ", 2)[:2], body)

    def respond(self, request_line: list[bytes], body: bytes) -> None:
        method, path = request_line  # lower-cased with the head
        if path.startswith(b"/_sink/"):
            if method == b"post" and path == b"/_sink/reset":
                self.counts.requests = self.counts.events = 0
            stats = {"requests": self.counts.requests, "events": self.counts.events}
            self.write(answer(json.dumps(stats).encode()))
            return
        self.counts.requests += 1
        self.counts.events += body.count(b'"event_id"')
        if self.latency_s > 0:
            asyncio.get_running_loop().call_later(self.latency_s, self.write, answer(ACCEPTED))
        else:
            self.write(answer(ACCEPTED))

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)


async def serve(port: int, latency_s: float) -> None:
    counts = Counts()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SinkProtocol(counts, latency_s), "127.0.0.1", port, reuse_address=True
    )
    bound = server.sockets[0].getsockname()[1]
    print(f"listening on http://127.0.0.1:{bound}", flush=True)
    async with server:
        await server.serve_forever()


def start(latency_ms: int) -> tuple[subprocess.Popen[str], str]:
    """Start the sink in its own process; return it and its URL."""
    process = subprocess.Popen(
        [sys.executable, str(Path(__file__)), "--latency-ms", str(latency_ms)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    return process, process.stdout.readline().rsplit(" ", 1)[-1].strip()


def reset(url: str) -> None:
    """Zero the sink's counts."""
    request = urllib.request.Request(f"{url}/_sink/reset", b"", method="POST")
    with urllib.request.urlopen(request, timeout=30) as response:
        response.read()


def stats(url: str) -> dict[str, int]:
    """The requests and events the sink received since its last reset."""
    with urllib.request.urlopen(f"{url}/_sink/stats", timeout=30) as response:
        return {key: int(value) for key, value in json.loads(response.read()).items()}


def events(url: str) -> int:
    """The events the sink received since its last reset."""
    return stats(url)["events"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency-ms", type=int, default=0)
    args = parser.parse_args()
    asyncio.run(serve(args.port, args.latency_ms / 1000))


if __name__ == "__main__":
    main()
