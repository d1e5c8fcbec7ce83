"""The drain benchmark's baselines, run inside its process against the same sink as the daemon.

- minimal loop: the ceiling: claim 1,000 rows, join their stored (already normalised and hashed)
  JSON, POST, mark sent, *concurrency* requests at a time. It builds nothing and checks nothing:
  against the lean sink (bench/sink.py) the daemon's ratio to it shows the daemon's own cost.
- naive sender: one event per request, as Segment's and Stape's TikTok integrations send them,
  *concurrency* requests at a time over one keep-alive session, with the same prebuilt payloads.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

import aiohttp
import orjson

TOKEN = "bench-token"
PIXEL = "D34FV3JC77U1PDQ72P1G"
CONCURRENCY = 4  # the baselines' requests in flight: forwarder's default


async def minimal_loop(path: Path, url: str, concurrency: int = CONCURRENCY) -> float:
    """The ceiling: claim 1,000 rows, join their stored JSON, POST, mark sent. No checks."""
    conn = sqlite3.connect(path, isolation_level=None)
    claim = """UPDATE tiktok_outbox SET status = 'inflight' WHERE id IN
               (SELECT id FROM tiktok_outbox WHERE status = 'pending' LIMIT 1000)
               RETURNING id, event_id, event, payload"""
    started = time.perf_counter()
    async with aiohttp.ClientSession() as session:

        async def one(rows: list[tuple[int, str, str, str]]) -> None:
            events = b",".join(
                b'{"event":"%s","event_id":"%s","event_time":%d,%s'
                % (e.encode(), i.encode(), int(time.time()), p.encode()[1:])
                for _, i, e, p in rows
            )
            body = b'{"event_source":"web","event_source_id":"%s","data":[%s]}' % (
                PIXEL.encode(),
                events,
            )
            async with session.post(
                f"{url}/open_api/v1.3/event/track/", data=body, headers={"Access-Token": TOKEN}
            ) as response:
                await response.read()
            ids = orjson.dumps([r[0] for r in rows]).decode()
            conn.execute(
                "UPDATE tiktok_outbox SET status = 'sent' WHERE id IN "
                "(SELECT value FROM json_each(?))",
                (ids,),
            )

        while True:
            batches = [conn.execute(claim).fetchall() for _ in range(concurrency)]
            batches = [b for b in batches if b]
            if not batches:
                break
            await asyncio.gather(*(one(b) for b in batches))
    conn.close()
    return time.perf_counter() - started


async def naive_sender(path: Path, url: str, concurrency: int = CONCURRENCY) -> float:
    """One event per request, *concurrency* at a time; rows claimed and marked 1,000 at a time."""
    conn = sqlite3.connect(path, isolation_level=None)
    claim = """UPDATE tiktok_outbox SET status = 'inflight' WHERE id IN
               (SELECT id FROM tiktok_outbox WHERE status = 'pending' LIMIT 1000)
               RETURNING id, event_id, event, payload"""
    head = b'{"event_source":"web","event_source_id":"%s","data":[' % PIXEL.encode()
    started = time.perf_counter()
    async with aiohttp.ClientSession() as session:
        slots = asyncio.Semaphore(concurrency)

        async def one(event_id: str, event: str, body: str) -> None:
            data = b'%s{"event":"%s","event_id":"%s","event_time":%d,%s]}' % (
                head,
                event.encode(),
                event_id.encode(),
                int(time.time()),
                body.encode()[1:],
            )
            async with (
                slots,
                session.post(
                    f"{url}/open_api/v1.3/event/track/", data=data, headers={"Access-Token": TOKEN}
                ) as response,
            ):
                answer = await response.read()
                assert b'"code":0' in answer, answer

        while rows := conn.execute(claim).fetchall():
            await asyncio.gather(*(one(i, e, p) for _, i, e, p in rows))
            ids = orjson.dumps([r[0] for r in rows]).decode()
            conn.execute(
                "UPDATE tiktok_outbox SET status = 'sent' WHERE id IN "
                "(SELECT value FROM json_each(?))",
                (ids,),
            )
    conn.close()
    return time.perf_counter() - started
