"""``python -m forwarder.fake_tiktok``: the fake TikTok in its own process, until SIGTERM/SIGINT.

``make try``, ``make demo``, the benchmarks and the tests that need a separate process start it
so; they drive it through its ``/_fake/*`` control endpoints.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

from forwarder.fake_tiktok.server import FakeTikTok, loopback_host


async def _serve(host: str, port: int, token: str, latency_s: float, print_events: bool) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    signals = (signal.SIGTERM, signal.SIGINT)
    for signum in signals:
        loop.add_signal_handler(signum, stop.set)
    try:
        async with FakeTikTok(
            token=token, latency_s=latency_s, host=host, port=port, print_events=print_events
        ) as fake:
            print(f"fake-tiktok listening on {fake.url}", flush=True)
            await stop.wait()
    finally:
        for signum in signals:
            loop.remove_signal_handler(signum)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the fake until SIGTERM/SIGINT; print one ``listening on URL`` line once bound."""
    parser = argparse.ArgumentParser(
        prog="python -m forwarder.fake_tiktok",
        description="A fake TikTok Events API server (loopback only), for tests and demos.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="loopback address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="port, 0 picks a free one (default 0)")
    parser.add_argument("--token", default="test-token", help="the expected Access-Token")
    parser.add_argument(
        "--latency-ms", type=float, default=0.0, help="added to every answer (default 0)"
    )
    parser.add_argument(
        "--print-events", action="store_true", help="print one line per accepted request"
    )
    args = parser.parse_args(argv)
    try:
        host = loopback_host(args.host)
    except ValueError as error:
        parser.error(str(error))  # exits with status 2
    if args.latency_ms < 0 or not 0 <= args.port <= 65535:
        parser.error("--latency-ms must be >= 0 and --port within 0..65535")
    try:
        return asyncio.run(
            _serve(host, args.port, args.token, args.latency_ms / 1000, args.print_events)
        )
    except OSError as error:
        print(f"fake-tiktok: cannot listen on {host}:{args.port}: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
