"""The fake TikTok as a process: `python -m forwarder.fake_tiktok` serves and stops cleanly."""

from __future__ import annotations

import asyncio
import signal
import sys

import aiohttp
import orjson

from tests.support.repo import ROOT
from tests.support.track import body, event, post


async def test_cli_subprocess(session: aiohttp.ClientSession) -> None:
    """The CLI prints one listening line, serves requests, and exits 0 on SIGTERM."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "forwarder.fake_tiktok",
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--token",
        "T",
        "--latency-ms",
        "0",
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), timeout=20)).decode()
        prefix = "fake-tiktok listening on "
        assert line.startswith(prefix), line
        url = line[len(prefix) :].strip()
        assert url.startswith("http://127.0.0.1:")
        _, answer = await post(session, url, body(event()), token="T")
        assert answer["code"] == 0
        async with session.get(url + "/_fake/stats") as response:
            assert orjson.loads(await response.read())["accepted"] == 1
        proc.send_signal(signal.SIGTERM)
        out, err = await asyncio.wait_for(proc.communicate(), timeout=20)
        assert proc.returncode == 0, err.decode()
        assert out == b""
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.communicate()
