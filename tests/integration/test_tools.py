"""Operator and marketer commands on a real SQLite outbox: dead letters, inspect, check."""

from __future__ import annotations

import asyncio
import io
import sqlite3
import time
from pathlib import Path

import orjson
import pytest

from forwarder.fake_tiktok import FakeTikTok
from tests.support.commands import arun, run
from tests.support.harness import TOKEN, Harness
from tests.support.rows import insert, purchase, query, statuses

RAW_EMAIL = "buyer1@example.com"


def make_dead(db_path: Path) -> None:
    """Three dead rows, as the worker leaves them, and one pending row."""
    insert(db_path, [purchase(i) for i in range(4)])
    conn = sqlite3.connect(db_path)
    with conn:
        conn.execute(
            "UPDATE tiktok_outbox SET status='dead', attempts=1, last_code='40002',"
            " last_error='TikTok rejected the event (code 40002): data.0.x: bad',"
            " request_id='req-1', updated_at=? WHERE event_id IN ('order-0', 'order-1')",
            (time.time(),),
        )
        conn.execute(
            "UPDATE tiktok_outbox SET status='dead', last_code='malformed',"
            " last_error='payload.properties.value must be a number, got string', updated_at=?"
            " WHERE event_id = 'order-2'",
            (time.time() - 3 * 86400,),
        )
    conn.close()


def test_dead_list_table_and_filters(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """dead list shows reason, code, attempts and request_id, filtered by code and time."""
    make_dead(env)
    code, out, _ = run(capsys, "dead", "list")
    assert code == 0
    assert "order-0" in out and "order-2" in out and "order-3" not in out
    assert "req-1" in out and "40002" in out and "must be a number" in out
    _, out, _ = run(capsys, "dead", "list", "--code", "malformed")
    assert "order-2" in out and "order-0" not in out
    _, out, _ = run(capsys, "dead", "list", "--since", "1d")
    assert "order-0" in out and "order-2" not in out
    _, out, _ = run(capsys, "dead", "list", "--json", "--event", "Purchase", "--limit", "1")
    [row] = orjson.loads(out)
    assert row["event_id"] == "order-0" and row["request_id"] == "req-1"


def test_replay_needs_a_filter_and_dry_run_changes_nothing(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """replay without ids, filters or --all is refused; --dry-run only counts."""
    make_dead(env)
    code, _, err = run(capsys, "dead", "replay")
    assert code == 2 and "--all" in err
    code, out, _ = run(capsys, "dead", "replay", "--code", "40002", "--dry-run")
    assert code == 0 and "would replay 2" in out
    assert statuses(env) == {"dead": 3, "pending": 1}


async def test_replay_then_delivery(
    env: Path,
    capsys: pytest.CaptureFixture[str],
    harness: Harness,
) -> None:
    """Replayed rows are delivered by the next run, and inspect keeps the earlier failure."""
    make_dead(env)
    code, out, _ = await arun(capsys, "dead", "replay", "--code", "40002")
    assert code == 0 and "replayed 2" in out
    assert statuses(env) == {"dead": 1, "pending": 3}
    await harness.drain()
    assert statuses(env) == {"dead": 1, "sent": 3}
    code, out, _ = await arun(capsys, "inspect", "order-0", "--json")
    [document] = orjson.loads(out)
    assert document["status"] == "sent"
    [replay] = document["replays"]
    assert replay["code"] == "40002" and replay["request_id"] == "req-1"
    assert replay["attempts"] == 1


def test_replay_by_id(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """replay with row ids touches only those rows."""
    make_dead(env)
    [(row_id,)] = query(env, "SELECT id FROM tiktok_outbox WHERE event_id = 'order-2'")
    code, out, _ = run(capsys, "dead", "replay", str(row_id))
    assert code == 0 and "replayed 1" in out
    assert query(env, "SELECT status FROM tiktok_outbox WHERE id = ?", (row_id,)) == [("pending",)]


def test_purge_refuses_without_yes(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """purge without --yes deletes nothing and says how many it would; with --yes it deletes."""
    make_dead(env)
    code, _, err = run(capsys, "dead", "purge", "--all")
    assert code == 2 and "refusing to delete 3" in err
    assert statuses(env) == {"dead": 3, "pending": 1}
    code, out, _ = run(capsys, "dead", "purge", "--code", "malformed", "--yes")
    assert code == 0 and "purged 1" in out
    assert statuses(env) == {"dead": 2, "pending": 1}


def test_inspect_shows_hashed_identifiers(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """inspect shows an event's life with identifiers hashed, never raw."""
    insert(env, [purchase(1)])
    code, out, _ = run(capsys, "inspect", "order-1")
    assert code == 0
    assert "status      pending" in out
    assert RAW_EMAIL not in out.lower() and "555-0001" not in out
    assert "email" in out
    code, _, err = run(capsys, "inspect", "nope")
    assert code == 1 and "no row" in err


def test_check_reports_settings_and_database(
    env: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """check passes on a migrated database and fails, naming the fix, on an empty one."""
    code, out, _ = run(capsys, "check")
    assert code == 0 and "migrated" in out and "token         set" in out
    assert TOKEN not in out
    monkeypatch.setenv("FORWARDER_DATABASE_URL", f"sqlite:///{tmp_path / 'empty.db'}")
    code, out, _ = run(capsys, "check")
    assert code == 1 and "forwarder migrate" in out


async def test_check_send_test(
    env: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    fake: FakeTikTok,
) -> None:
    """check --send-test sends one Test Event with the configured code and shows the answer."""
    monkeypatch.setenv("TIKTOK_API_URL", fake.url)
    monkeypatch.setenv("TIKTOK_TEST_EVENT_CODE", "TEST777")
    code, out, _ = await arun(capsys, "check", "--send-test")
    assert code == 0, out
    assert "accepted: code 0" in out
    [event] = fake.accepted
    assert event["test_event_code"] == "TEST777"


def test_check_payload_lint(
    env: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """check --payload passes a clean event and exits 4 on one with errors, listing them."""
    clean = {
        "event_id": "o-1",
        "event": "Purchase",
        "event_time": int(time.time()),
        "payload": {
            "user": {
                "email": "a@example.com",
                "phone": "+12133734253",
                "ttclid": "E.C.P.x",
                "ttp": "ttp-1",
                "ip": "203.0.113.7",
                "user_agent": "Mozilla/5.0",
            },
            "properties": {
                "currency": "USD",
                "value": 12.5,
                "content_type": "product",
                "contents": [{"content_id": "sku-1", "quantity": 1, "price": 12.5}],
            },
            "page": {"url": "https://shop.example/thanks"},
        },
    }
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(orjson.dumps(clean))))
    code, out, _ = run(capsys, "check", "--payload", "-")
    assert code == 0, out
    bad = {
        "event_id": "o-2",
        "event": "CompletePayment",
        "payload": {"properties": {"currency": "XYZ", "value": 3}},
    }
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(orjson.dumps(bad))))
    code, out, _ = run(capsys, "check", "--payload", "-")
    assert code == 4
    assert "currency" in out and "Purchase" in out


def test_check_payload_reads_tiktoks_request_body(
    env: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """check --payload says which shape it read and shows each error's reason code by index."""
    event = {
        "event": "Purchase",
        "event_id": "o-3",
        "event_time": int(time.time()),
        "user": {"ip": "203.0.113.7", "user_agent": "Mozilla/5.0", "ttclid": "E.C.P.x"},
        "page": {"url": "https://shop.example/thanks"},
        "properties": {"currency": "XXX", "value": 3},
    }
    body = {"event_source": "web", "event_source_id": "C4ABC", "data": [event, event]}
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(orjson.dumps(body))))
    code, out, _ = run(capsys, "check", "--payload", "-")
    assert code == 4
    lines = out.splitlines()
    assert lines[0].startswith("read as a TikTok /event/track/ request body with 2 event(s)")
    assert lines[1].startswith("error    data[0].properties.currency [malformed/value]: ")
    assert lines[2].startswith("error    data[1].properties.currency [malformed/value]: ")
    assert lines[-1] == "2 error(s), 0 warning(s)"


async def test_sent_rows_are_scrubbed_of_raw_identifiers(env: Path, harness: Harness) -> None:
    """After delivery and a VACUUM, the database file holds no raw e-mail address or phone."""
    insert(env, [purchase(i) for i in range(50)])
    await harness.drain()
    assert statuses(env) == {"sent": 50}
    [(stored,)] = query(env, "SELECT payload FROM tiktok_outbox WHERE event_id = 'order-1'")
    assert len(orjson.loads(stored)["user"]["email"][0]) == 64
    conn = sqlite3.connect(env)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.execute("VACUUM")
    conn.close()
    data = (await asyncio.to_thread(env.read_bytes)).lower()
    assert RAW_EMAIL.encode() not in data
    assert b"555-0001" not in data
    assert b"buyer" not in data


async def test_raw_identifiers_kept_when_asked(env: Path, harness: Harness) -> None:
    """With scrubbing off, a sent row keeps the payload the application wrote."""
    insert(env, [purchase(1)])
    await harness.drain(scrub=False)
    [(stored,)] = query(env, "SELECT payload FROM tiktok_outbox")
    assert RAW_EMAIL in stored.lower()


async def test_retention_prunes_old_sent_rows_only(env: Path, harness: Harness) -> None:
    """Sent rows older than the retention are deleted; newer sent, pending and dead rows stay."""
    insert(env, [purchase(i) for i in range(6)])
    now = time.time()
    conn = sqlite3.connect(env)
    with conn:
        conn.execute(
            "UPDATE tiktok_outbox SET status='sent', sent_at=? WHERE id <= 3", (now - 8 * 86400,)
        )
        conn.execute(
            "UPDATE tiktok_outbox SET status='sent', sent_at=? WHERE id = 4", (now - 3600,)
        )
        conn.execute(
            "UPDATE tiktok_outbox SET status='dead', updated_at=? WHERE id = 5", (now - 30 * 86400,)
        )
    conn.close()
    await harness.drain(retention_s=7 * 86400)
    assert query(env, "SELECT id, status FROM tiktok_outbox ORDER BY id") == [
        (4, "sent"),
        (5, "dead"),
        (6, "sent"),
    ]
