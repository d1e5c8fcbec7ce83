"""Robustness: what a hostile row, a slow slot or a split answer must not do to delivery."""

from __future__ import annotations

import asyncio
import contextlib
import io
import random
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web

from forwarder import logs
from forwarder.backoff import BackoffPolicy
from forwarder.errors import StoreError
from forwarder.fake_tiktok import FakeTikTok
from forwarder.metrics import Metrics
from forwarder.outcome import Verdict
from forwarder.pacing import Pacer
from forwarder.store.base import Retry
from forwarder.store.sqlite import SQLiteStore
from forwarder.store.sqlite import outbox as sqlite_outbox
from forwarder.tiktok.build import BuildOptions
from forwarder.tiktok.classify import classify
from forwarder.tiktok.client import TikTokClient
from forwarder.tiktok.destination import TikTok
from forwarder.tiktok.spec import TRACK_PATH
from forwarder.worker import Worker, WorkerConfig
from tests.support.harness import PIXEL, TOKEN
from tests.support.rows import insert, purchase, query, statuses


def make_worker(
    store: SQLiteStore,
    url: str,
    session: aiohttp.ClientSession,
    *,
    concurrency: int = 4,
    lease_s: float = 60.0,
    timeout_s: float = 2.0,
    drain: bool = True,
) -> Worker:
    """A worker on the real wall clock, as the daemon builds it."""
    config = WorkerConfig(
        backoff=BackoffPolicy(initial_s=1.0, cap_s=300.0, retry_after_cap_s=600.0),
        poll_interval_s=0.02,
        lease_s=lease_s,
        shutdown_grace_s=5.0,
    )
    pacer = Pacer(
        max_limit=concurrency,
        throttle_max_s=300,
        probe_max_s=60,
        retry_after_max_s=600,
        rng=random.Random(1),
    )
    build = BuildOptions(
        default_pixel=PIXEL,
        phone_region="US",
        consent_default="granted",
        max_age_s=7 * 86400,
        test_event_code=None,
    )
    tiktok = TikTok(TikTokClient(session, url, TOKEN, timeout_s), build)
    return Worker(
        store, tiktok, config, pacer, Metrics(), owner="daemon", drain=drain, rng=random.Random(2)
    )


def _undecodable_row(db_path: Path, event_id: str) -> None:
    """Insert a row whose payload TEXT is not valid UTF-8 (as a C or CLI writer can)."""
    raw = b'{"user":{"email":"alice@example.com\xff"}}'
    conn = sqlite3.connect(db_path, timeout=10)
    try:
        with conn:
            conn.execute(
                "INSERT INTO tiktok_outbox (event_id, event, payload) "
                f"VALUES (?, 'Purchase', CAST(x'{raw.hex()}' AS TEXT))",
                (event_id,),
            )
    finally:
        conn.close()


# --- Leases our own daemon lets expire -----------------------------------------------------------


async def test_queued_batches_keep_their_lease(
    store: SQLiteStore, db_path: Path, fake: FakeTikTok, session: aiohttp.ClientSession
) -> None:
    """Batches waiting for a request slot keep their lease: the daemon never resends its rows."""
    # Six destinations (test codes) make six batches from one claim, but only one slot exists;
    # the last batches wait longer than the lease (lease = 2 x timeout, as app.py requires).
    fake.latency_s = 0.3
    insert(db_path, [{**purchase(i), "test_event_code": f"T{i % 6}"} for i in range(60)])
    worker = make_worker(store, fake.url, session, concurrency=1, lease_s=1.2, timeout_s=0.6)
    totals = await asyncio.wait_for(worker.run(), 30)
    ids = fake.accepted_ids()
    assert totals.rescued == 0, f"the daemon rescued {totals.rescued} rows it still held"
    assert len(ids) == len(set(ids)) == 60, f"{len(ids) - len(set(ids))} events sent twice"


async def test_bisection_keeps_the_lease_of_waiting_halves(
    store: SQLiteStore, db_path: Path, fake: FakeTikTok, session: aiohttp.ClientSession
) -> None:
    """Halves waiting while a rejected batch is bisected keep their lease and are sent once."""
    fake.latency_s = 0.15
    fake.poison.add("order-250")  # in the half bisected first
    fake.poison_names_index = False
    insert(db_path, [purchase(i) for i in range(256)])
    worker = make_worker(store, fake.url, session, lease_s=1.0, timeout_s=0.5)
    totals = await asyncio.wait_for(worker.run(), 60)
    ids = fake.accepted_ids()
    assert totals.rescued == 0, f"the daemon rescued {totals.rescued} rows it still held"
    assert len(ids) == len(set(ids)) == 255, f"{len(ids) - len(set(ids))} events sent twice"
    assert statuses(db_path) == {"sent": 255, "dead": 1}


# --- Poison rows that stop or kill the loop -------------------------------------------------------


async def test_deeply_nested_payload_does_not_kill_the_worker(
    store: SQLiteStore, db_path: Path, fake: FakeTikTok, session: aiohttp.ClientSession
) -> None:
    """A payload nested deeper than orjson.dumps allows is dead-lettered, not fatal to run()."""
    depth = 300  # orjson.loads accepts up to 1024 levels, orjson.dumps only about 254
    deep = '{"properties":' + '{"a":' * depth + "1" + "}" * depth + "}"
    insert(
        db_path,
        [purchase(i) for i in range(5)]
        + [{"event_id": "deep", "event": "Purchase", "payload": deep}],
    )
    worker = make_worker(store, fake.url, session)
    try:
        totals = await asyncio.wait_for(worker.run(), 30)
    except TypeError as error:
        pytest.fail(f"worker.run() died on one row: {type(error).__name__}: {error}")
    assert totals.delivered == 5
    assert query(db_path, "SELECT status FROM tiktok_outbox WHERE event_id='deep'") == [("dead",)]


async def test_undecodable_row_does_not_stop_delivery(
    store: SQLiteStore, db_path: Path, fake: FakeTikTok, session: aiohttp.ClientSession
) -> None:
    """A row whose TEXT is not valid UTF-8 is dead-lettered; it does not make every claim fail."""
    _undecodable_row(db_path, "bad-utf8")
    insert(db_path, [purchase(i) for i in range(5)])
    worker = make_worker(store, fake.url, session)
    try:
        totals = await asyncio.wait_for(worker.run(), 30)
    except StoreError as error:
        pytest.fail(f"every claim failed on one undecodable row: {error}")
    assert totals.delivered == 5


@pytest.mark.parametrize("sharing", [False, True], ids=["alone", "sharing"])
async def test_undecodable_row_is_claimed_with_the_others(
    store: SQLiteStore, db_path: Path, sharing: bool
) -> None:
    """Alone on the file or sharing it with an application, a claim returns an undecodable row
    (to become a dead letter) with the good ones."""
    now = time.time()
    if sharing:  # the writer's first claim reads where the file stands; the inserts come after
        assert await store.claim(10, "daemon", now, now + 60) == []
    _undecodable_row(db_path, "bad-utf8")
    insert(db_path, [purchase(i) for i in range(3)])
    rows = await store.claim(10, "daemon", now + 1, now + 60)
    assert sorted(row.event_id for row in rows) == ["bad-utf8", "order-0", "order-1", "order-2"]
    assert (store._writer.gave_way_s > 0) is sharing


async def test_store_errors_never_carry_row_contents(store: SQLiteStore, db_path: Path) -> None:
    """A failing claim's StoreError (logged, printed by the CLI) holds no raw identifier."""
    _undecodable_row(db_path, "bad-utf8")
    now = time.time()
    message = ""
    try:
        await store.claim(10, "daemon", now, now + 60)
    except StoreError as error:
        message = str(error)
    assert "alice@example.com" not in message, message


async def test_failed_claim_does_not_hold_the_write_lock(store: SQLiteStore, db_path: Path) -> None:
    """After a claim fails on an undecodable row, the application can still insert."""
    _undecodable_row(db_path, "bad-utf8")
    now = time.time()
    with contextlib.suppress(StoreError):
        await store.claim(10, "daemon", now, now + 60)
    conn = sqlite3.connect(db_path, timeout=2)
    try:
        with conn:
            conn.execute(
                "INSERT INTO tiktok_outbox (event_id, event) VALUES ('order-1', 'Purchase')"
            )
    except sqlite3.OperationalError as error:
        pytest.fail(f"the application's insert failed after a failed claim: {error}")
    finally:
        conn.close()


# --- TikTok's answer read in part -----------------------------------------------------------------


async def test_a_response_body_in_two_chunks_is_read_whole(session: aiohttp.ClientSession) -> None:
    """TikTok's code 0 answer arriving in two chunks is classified accepted, not bad_body."""
    body = orjson.dumps({"code": 0, "message": "OK", "request_id": "r1", "data": {}})

    async def track(request: web.Request) -> web.StreamResponse:
        await request.read()
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        await response.write(body[:10])
        await asyncio.sleep(0.05)
        await response.write(body[10:])
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_post(TRACK_PATH, track)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        port = runner.addresses[0][1]
        client = TikTokClient(session, f"http://127.0.0.1:{port}", TOKEN, 5.0)
        answer = await client.send(b'{"event_source":"web","event_source_id":"X","data":[]}')
    finally:
        await runner.cleanup()
    outcome = classify(answer, time.time())
    assert outcome.verdict is Verdict.ACCEPTED, (outcome.code, answer.body)


# --- What `forwarder status` reports --------------------------------------------------------------


async def test_status_stops_saying_paused_after_a_restart_delivers(
    store: SQLiteStore, db_path: Path, fake: FakeTikTok, session: aiohttp.ClientSession
) -> None:
    """A daemon restarted after a credential pause clears the recorded pause once TikTok accepts."""
    insert(db_path, [purchase(i) for i in range(3)])
    fake.token = "rotated"
    totals = await asyncio.wait_for(make_worker(store, fake.url, session).run(), 30)
    assert totals.paused_reason == "40105"
    fake.token = TOKEN
    conn = sqlite3.connect(db_path, timeout=10)  # make the held rows due at once, as time would
    with conn:
        conn.execute("UPDATE tiktok_outbox SET next_attempt_at = 0")
    conn.close()
    totals = await asyncio.wait_for(make_worker(store, fake.url, session).run(), 30)
    assert statuses(db_path) == {"sent": 3}
    summary = await store.summary(time.time())
    assert summary.state["destination"]["paused"] is False, summary.state["destination"]


async def test_a_broken_log_stream_does_not_break_settling(
    store: SQLiteStore, db_path: Path, fake: FakeTikTok, session: aiohttp.ClientSession
) -> None:
    """With the log stream closed (journald restarted), a pause still returns rows to pending."""
    closed = io.StringIO()
    closed.close()
    logs.configure("json", "info", stream=closed)
    insert(db_path, [purchase(i) for i in range(5)])
    fake.token = "revoked"
    worker = make_worker(store, fake.url, session)
    totals = await asyncio.wait_for(worker.run(), 30)
    assert totals.paused_reason == "40105"
    assert statuses(db_path) == {"pending": 5}


# --- A write of the daemon cut half-way while it shares the file with an application ----------


@pytest.fixture
async def shared(db_path: Path) -> AsyncIterator[tuple[SQLiteStore, LockOnSecondUpdate]]:
    """A store sharing its file with an application, and a lock to spring mid-operation."""
    opened = await SQLiteStore.open(db_path, busy_timeout_ms=50)
    await opened.migrate()
    now = time.time()
    assert await opened.claim(10, "daemon", now, now + 60) == []  # the writer's first reading
    insert(db_path, [purchase(i) for i in range(400)])  # the application commits: sharing
    lock = LockOnSecondUpdate(db_path)
    opened._writer._conn.set_trace_callback(lock.saw)
    try:
        yield opened, lock
    finally:
        lock.close()
        await opened.close()


class LockOnSecondUpdate:
    """Once armed, takes SQLite's write lock for another connection just as the daemon's
    second UPDATE starts, so that statement fails after the first one committed."""

    def __init__(self, path: Path) -> None:
        self._holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._updates = 0
        self.armed = False

    def saw(self, sql: str) -> None:
        """The daemon's connection is about to run *sql* (its trace callback)."""
        if self.armed and sql.lstrip().startswith("UPDATE"):
            self._updates += 1
            if self._updates == 2:
                self._holder.execute("BEGIN IMMEDIATE")

    def release(self) -> None:
        """Disarm and let go of the lock."""
        self.armed, self._updates = False, 0
        if self._holder.in_transaction:
            self._holder.execute("ROLLBACK")

    def close(self) -> None:
        """Let go and close the connection."""
        self.release()
        self._holder.close()


async def test_claim_cut_half_way_hands_over_what_it_leased(
    shared: tuple[SQLiteStore, LockOnSecondUpdate], db_path: Path
) -> None:
    """A claim whose second lease transaction fails returns the rows the first one leased,
    rather than leaving them leased where no worker sees them."""
    store, lock = shared
    now = time.time()
    lock.armed = True
    rows = await store.claim(400, "daemon", now, now + 60)
    lock.release()
    assert len(rows) == 200
    assert statuses(db_path) == {"inflight": 200, "pending": 200}


async def test_retried_reschedule_leaves_rows_claimed_again_alone(
    shared: tuple[SQLiteStore, LockOnSecondUpdate], db_path: Path
) -> None:
    """A reschedule that failed half-way and is retried does not take back the rows that
    were claimed again in between: the new claim's batch can still mark them sent."""
    store, lock = shared
    now = time.time()
    ids = [row.id for row in await store.claim(400, "daemon", now, now + 60)]
    retries = [Retry(row_id, now) for row_id in ids]
    lock.armed = True
    with pytest.raises(StoreError, match="locked"):
        await store.reschedule(retries, "daemon", "50000", "busy", None, True, now)
    lock.release()
    again = await store.claim(400, "daemon", now + 1, now + 61)
    assert len(again) == 200
    assert await store.reschedule(retries, "daemon", "50000", "busy", None, True, now) == 200
    assert await store.mark_sent([r.id for r in again], "daemon", "0", "req", now + 2) == 200
    assert query(db_path, "SELECT status, attempts, count(*) FROM tiktok_outbox GROUP BY 1, 2") == [
        ("pending", 1, 200),
        ("sent", 2, 200),
    ]


# Column values as an application (or a C or CLI writer) may store them: the claim must hand
# each to the payload builder exactly as sqlite3 reads it. The first group is claimed as one
# JSON value; the second cannot be written as JSON (a BLOB, an infinite REAL) and is read row
# by row.
_AS_JSON = [
    ("real-time", 1764675123.25, '{"user":{"email":"a@example.com"}}', 1764675123.9999996),
    ("whole-real-time", 1764675123.0, "{}", 1764675123.1234567),
    ("text-time", "yesterday", "null", 1.5),
    ("null-time", None, "", 0.1),
    ("unicode", 17, '{"x":"é 😀 \\u0000 \\"q\\" \\\\"}', 1e300),
    ("nul-and-quotes", 2**62, 'a\x00b"c\\d\n', 5e-324),
]
_ROW_BY_ROW = [
    ("blob-payload", 1, b"\x00\x01{}", 1764675123.5),
    ("infinite-created-at", 1, "{}", float("inf")),
]


def _insert_odd(db_path: Path, rows: list[tuple[object, ...]], due: float) -> None:
    conn = sqlite3.connect(db_path, timeout=10)
    try:
        with conn:
            conn.executemany(
                "INSERT INTO tiktok_outbox (event_id, event, event_time, payload, created_at,"
                " next_attempt_at) VALUES (?, 'Purchase', ?, ?, ?, ?)",
                [(*row, due) for row in rows],
            )
    finally:
        conn.close()


def _exactly(db_path: Path, event_ids: list[str]) -> dict[str, list[tuple[type, object]]]:
    """Each row's claimed columns as sqlite3 reads them, with their Python types."""
    conn = sqlite3.connect(db_path)
    try:
        rows = conn.execute(
            "SELECT id, event_id, event, event_time, payload, pixel_code, event_source,"
            " test_event_code, attempts, created_at, payload_format FROM tiktok_outbox"
            f" WHERE event_id IN ({','.join('?' * len(event_ids))})",
            event_ids,
        ).fetchall()
    finally:
        conn.close()
    return {row[1]: [(type(value), value) for value in row] for row in rows}


@pytest.mark.parametrize("sharing", [False, True], ids=["alone", "sharing"])
async def test_claim_reads_every_value_exactly(
    store: SQLiteStore, db_path: Path, sharing: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A claim read as one JSON value gives every column the type and value sqlite3 reads
    (REALs to the last bit, text with NULs and quotes), and rows JSON cannot hold come whole."""
    read_as_json: list[bool] = []
    real_read_rows = sqlite_outbox.read_rows

    def spy(*args: Any) -> list[Any] | None:
        rows = real_read_rows(*args)
        read_as_json.append(rows is not None)
        return rows

    monkeypatch.setattr(sqlite_outbox, "read_rows", spy)
    now = time.time()
    if sharing:  # the writer's first claim reads where the file stands; the inserts come after
        assert await store.claim(10, "daemon", now, now + 60) == []
    _insert_odd(db_path, _AS_JSON, now - 20)
    _insert_odd(db_path, _ROW_BY_ROW, now - 10)
    claimed = await store.claim(len(_AS_JSON), "daemon", now, now + 60)
    assert read_as_json[-1] is True
    claimed += await store.claim(10, "daemon", now, now + 60)
    assert read_as_json[-1] is False
    expected = _exactly(db_path, [str(row[0]) for row in _AS_JSON + _ROW_BY_ROW])
    got = {str(row.event_id): [(type(value), value) for value in row] for row in claimed}
    assert got == expected
    assert (store._writer.gave_way_s > 0) is sharing


async def test_claim_too_big_for_one_json_value_is_read_row_by_row(
    store: SQLiteStore, db_path: Path
) -> None:
    """A claim whose rows would make one JSON value longer than SQLITE_MAX_LENGTH (1e9 bytes;
    lowered here to 200 kB) reads them row by row instead of failing every claim."""
    store._writer._conn.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, 200_000)
    insert(db_path, [purchase(i, note="x" * 5_000) for i in range(100)])
    now = time.time()
    rows = await store.claim(100, "daemon", now, now + 60)
    assert len(rows) == 100


@pytest.mark.parametrize("scrub", [False, True])
async def test_retried_mark_sent_counts_the_rows_its_first_try_marked(
    shared: tuple[SQLiteStore, LockOnSecondUpdate], db_path: Path, scrub: bool
) -> None:
    """A mark_sent that failed half-way and is retried counts all its rows as marked (the
    worker would otherwise warn of leases lost) and counts each row's attempt once."""
    store, lock = shared
    now = time.time()
    ids = [row.id for row in await store.claim(400, "daemon", now, now + 60)]
    payloads = ["{}"] * len(ids) if scrub else None
    lock.armed = True
    with pytest.raises(StoreError, match="locked"):
        await store.mark_sent(ids, "daemon", "0", "req", now, payloads)
    lock.release()
    assert statuses(db_path) == {"sent": 200, "inflight": 200}
    assert await store.mark_sent(ids, "daemon", "0", "req", now, payloads) == 400
    assert query(db_path, "SELECT status, attempts, count(*) FROM tiktok_outbox GROUP BY 1, 2") == [
        ("sent", 1, 400)
    ]
