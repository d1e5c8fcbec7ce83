"""Rows in Meta's shape on real databases: migration 0004 on SQLite and PostgreSQL, the column
through both stores, delivery to the fake TikTok over loopback, and the commands that set,
show and check it."""

from __future__ import annotations

import time
from pathlib import Path

import asyncpg
import orjson
import pytest

from forwarder import migrate
from forwarder.store.base import NewEvent
from forwarder.store.postgres import PostgresStore
from forwarder.store.sqlite import migrate_sync
from tests.support.backends import Backend
from tests.support.commands import run
from tests.support.harness import PIXEL, Harness
from tests.support.meta import EMAIL_HASH, expected_web_event, meta_event, meta_row
from tests.support.rows import insert, purchase, query

MIGRATION = "0004_payload_format"
OWNER = "test-owner"


NOTE = (
    "not carried over from Meta's event: user_data.ph (hashed without the + TikTok's hash "
    "needs), user_data.fbc (Meta only), user_data.fbp (Meta only)"
)


@pytest.fixture
def before_0004(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """Migrations as a release before this one had them (0004 not yet there)."""
    every = migrate.load
    monkeypatch.setattr(
        migrate, "load", lambda dialect: [m for m in every(dialect) if m.name < MIGRATION]
    )
    return monkeypatch


# --- the migration ------------------------------------------------------------------------------


def test_migration_0004_is_one_added_column_on_both_databases() -> None:
    """0004 exists for both databases and adds one nullable column without a constraint."""
    for dialect in ("sqlite", "postgresql"):
        [found] = [m for m in migrate.load(dialect) if m.name == MIGRATION]
        statements = [line for line in found.sql.splitlines() if line and not line.startswith("--")]
        assert [s.lower() for s in statements] == [
            "alter table tiktok_outbox add column payload_format text;"
        ]


def test_sqlite_migration_keeps_existing_rows_and_writers(
    before_0004: pytest.MonkeyPatch, db_path: Path
) -> None:
    """An outbox of the previous release gains the column; its rows read NULL, old and new
    writers both insert, and no value is refused by the database."""
    assert MIGRATION not in migrate_sync(db_path)
    insert(db_path, [purchase(1)])  # an application of the previous release
    before_0004.undo()
    assert migrate_sync(db_path) == [MIGRATION]
    assert migrate_sync(db_path) == []
    insert(db_path, [purchase(2), {**purchase(3), "payload_format": "no-such-format"}])
    rows = query(db_path, "SELECT event_id, payload_format FROM tiktok_outbox ORDER BY id")
    assert rows == [("order-1", None), ("order-2", None), ("order-3", "no-such-format")]


async def test_postgres_migration_keeps_existing_rows_and_writers(
    before_0004: pytest.MonkeyPatch, pg_url: str
) -> None:
    """The same on PostgreSQL: the column is added to a table that already has rows."""
    store = await PostgresStore.open(pg_url)
    try:
        assert MIGRATION not in await store.migrate()
        conn = await asyncpg.connect(pg_url)
        try:
            await conn.execute("INSERT INTO tiktok_outbox (event_id, event) VALUES ('o-1', 'Lead')")
            before_0004.undo()
            assert await store.migrate() == [MIGRATION]
            assert await store.migrate() == []
            await conn.execute(
                "INSERT INTO tiktok_outbox (event_id, event, payload_format)"
                " VALUES ('o-2', 'Lead', 'meta_capi'), ('o-3', 'Lead', 'no-such-format')"
            )
            rows = await conn.fetch(
                "SELECT event_id, payload_format FROM tiktok_outbox ORDER BY id"
            )
        finally:
            await conn.close()
        assert [tuple(row) for row in rows] == [
            ("o-1", None),
            ("o-2", "meta_capi"),
            ("o-3", "no-such-format"),
        ]
        assert MIGRATION in await store.applied_migrations()
    finally:
        await store.close()


# --- the column through both stores -------------------------------------------------------------


async def test_the_column_flows_through_claim_insert_find_and_scrub(backend: Backend) -> None:
    """A claim and find carry payload_format; insert sets it; a scrubbed sent row says its payload
    is TikTok's shape now, and a row whose payload is kept keeps its format."""
    store, now = backend.store, time.time()
    await backend.insert(
        [
            {
                "event_id": "m-1",
                "event": "Purchase",
                "payload": "{}",
                "payload_format": "meta_capi",
            },
            {
                "event_id": "m-2",
                "event": "Purchase",
                "payload": "{}",
                "payload_format": "meta_capi",
            },
            {"event_id": "t-1", "event": "Purchase", "payload": "{}"},
        ]
    )
    row_id, new = await store.insert(NewEvent("m-3", "Lead", payload_format="meta_capi"))
    assert new
    claimed = await store.claim(10, OWNER, now, now + 60)
    formats = {row.event_id: row.payload_format for row in claimed}
    assert formats == {"m-1": "meta_capi", "m-2": "meta_capi", "t-1": None, "m-3": "meta_capi"}
    ids = {row.event_id: row.id for row in claimed}
    sent = [ids["m-1"], ids["t-1"]]
    assert await store.mark_sent(sent, OWNER, "0", "r-1", now, ['{"user":{}}', "{}"]) == 2
    assert await store.mark_sent([ids["m-2"]], OWNER, "0", "r-2", now) == 1
    found = {
        event_id: [(row.status, row.payload_format) for row, _ in await store.find(event_id)]
        for event_id in ("m-1", "m-2", "t-1", "m-3")
    }
    assert found == {
        "m-1": [("sent", "tiktok")],
        "m-2": [("sent", "meta_capi")],
        "t-1": [("sent", None)],
        "m-3": [("inflight", "meta_capi")],
    }
    assert row_id == ids["m-3"]


# --- delivery -----------------------------------------------------------------------------------


async def test_a_meta_row_reaches_tiktok_as_its_event(harness: Harness, db_path: Path) -> None:
    """A Meta row inserted by SQL is delivered over loopback as the TikTok event it means; what
    was dropped is on the row and counted; rows that cannot be converted die alone."""
    now = harness.clock.now
    event_time = int(now) - 60
    insert(
        db_path,
        [
            meta_row("order-1", meta_event(event_time)),
            meta_row("order-2", meta_event(event_time, action_source="business_messaging")),
            meta_row("order-3", meta_event(event_time), payload_format="meta"),
            purchase(4),
        ],
    )
    totals = await harness.drain()
    assert totals.delivered == 2
    [accepted] = [e for e in harness.fake.accepted if e["event_id"] == "order-1"]
    assert (accepted["event_source"], accepted["event_source_id"]) == ("web", PIXEL)
    sent = {
        key: value
        for key, value in accepted.items()
        if key not in ("event_source", "event_source_id", "test_event_code")
    }
    assert sent == expected_web_event("order-1", event_time)
    rows = dict(
        (event_id, rest)
        for event_id, *rest in query(
            db_path,
            "SELECT event_id, status, last_code, last_error, payload_format FROM tiktok_outbox",
        )
    )
    assert rows["order-1"] == ["sent", "0", NOTE, "tiktok"]
    assert rows["order-2"][:2] == ["dead", "malformed"]
    assert rows["order-2"][2].startswith("[malformed/value] action_source business_messaging")
    assert rows["order-3"][:2] == ["dead", "malformed"]
    assert rows["order-3"][2].startswith("[malformed/value] payload_format must be")
    assert rows["order-4"] == ["sent", "0", None, None]
    dropped = harness.metrics.converted_dropped
    assert {label: dropped.labels(label)._value.get() for label in ("ph", "fbc", "fbp")} == {
        "ph": 1,
        "fbc": 1,
        "fbp": 1,
    }
    assert (
        "fb.1."
        not in query(db_path, "SELECT payload FROM tiktok_outbox WHERE event_id = 'order-1'")[0][0]
    )


# --- the commands -------------------------------------------------------------------------------


def test_enqueue_sets_the_format_and_inspect_shows_it(
    env: Path,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    """enqueue --payload-format meta_capi inserts a Meta event the daemon would send; inspect
    shows the format and the TikTok event; without the flag the Meta keys are refused."""
    event = {"event_id": "order-5", "event": "Purchase", "payload": meta_event(time.time() - 60)}
    path = tmp_path / "event.json"
    path.write_bytes(orjson.dumps(event))
    code, _, err = run(capsys, "enqueue", str(path))
    assert code == 4 and "unknown key" in err
    code, out, err = run(capsys, "enqueue", "--payload-format", "meta_capi", str(path))
    assert code == 0, err
    assert query(env, "SELECT event_id, payload_format FROM tiktok_outbox") == [
        ("order-5", "meta_capi")
    ]
    code, out, _ = run(capsys, "inspect", "order-5")
    assert code == 0
    assert "format      meta_capi" in out and EMAIL_HASH in out and "fbc" not in out
    code, out, _ = run(capsys, "inspect", "order-5", "--json")
    [shown] = orjson.loads(out)
    assert shown["payload_format"] == "meta_capi"
    assert shown["event_as_sent"]["user"]["email"] == [EMAIL_HASH]
    path.write_bytes(orjson.dumps({**event, "event_id": "order-6", "payload_format": "tiktok"}))
    code, _, err = run(capsys, "enqueue", "--payload-format", "meta_capi", str(path))
    assert code == 4 and "differs" in err


def test_check_payload_shows_the_tiktok_event_a_meta_event_becomes(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """check --payload reads a bare Meta event and prints each field's fate and the event."""
    path = tmp_path / "meta.json"
    path.write_bytes(orjson.dumps(meta_event(time.time() - 60, event_id="order-7")))
    code, out, _ = run(capsys, "check", "--payload", str(path))
    assert code == 0, out
    assert "read as one Meta server event" in out
    assert "mapped     user_data.em -> user.email" in out
    assert "dropped    user_data.fbc: Meta only" in out
    assert "TikTok event, as sent (identifiers hashed):" in out and '"event_id": "order-7"' in out
    path.write_bytes(orjson.dumps(meta_event(time.time() - 60, action_source="fax")))
    code, out, _ = run(capsys, "check", "--payload", str(path))
    assert code == 4 and "action_source [malformed/value]" in out
