"""Fuzzing with hypothesis: whatever an application writes, the worker neither crashes nor loses it.

Each example is a fresh small SQLite file holding arbitrary rows (any SQLite type in any column,
invalid UTF-8, arbitrary or deeply nested JSON payloads) next to one good row; the worker drains
it against the fake TikTok. Every row must end sent, or dead with a code and a reason.
`make soak` (FORWARDER_SOAK=1) runs ten times the examples, not derandomized.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from forwarder.fake_tiktok import FakeTikTok
from forwarder.store.sqlite import SQLiteStore, migrate_sync
from forwarder.tiktok.build_row import CONSENT_KEYS, PAYLOAD_KEYS
from forwarder.tiktok.spec import USER_KEYS
from tests.support.harness import TOKEN, Harness
from tests.support.rows import purchase, query

SOAK = bool(os.environ.get("FORWARDER_SOAK"))
COLUMNS = ("event_id", "event", "event_time", "pixel_code", "event_source", "test_event_code")
NAN_LIKE = ("NaN", "nan", "Infinity", "-Infinity", "1e999", "-0", "0x1F", "", " ", "null")


@dataclass(frozen=True)
class RawText:
    """Bytes stored as TEXT without UTF-8 validation, as a C client or the sqlite3 CLI can."""

    data: bytes


# --- Strategies ----------------------------------------------------------------------------------

leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),  # unbounded: far past 64 bits
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.sampled_from(NAN_LIKE),
    st.emails(),
)
keys = st.one_of(st.text(max_size=10), st.sampled_from(PAYLOAD_KEYS + USER_KEYS + CONSENT_KEYS))
json_values = st.recursive(
    leaves,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(keys, children, max_size=4),
    max_leaves=25,
)
users = st.one_of(
    st.dictionaries(
        st.sampled_from((*USER_KEYS, "emial", "Email", "")),
        st.one_of(json_values, st.lists(st.text(max_size=20), max_size=3), st.emails()),
        max_size=6,
    ),
    json_values,
)
consents = st.one_of(
    st.dictionaries(
        st.sampled_from((*CONSENT_KEYS, "other")),
        st.one_of(st.sampled_from(("granted", "denied", "GRANTED", "yes")), json_values),
        max_size=3,
    ),
    json_values,
)
# Objects shaped like the contract, with anything in the fields: they reach deeper code.
structured = st.fixed_dictionaries(
    {},
    optional={
        "user": users,
        "properties": st.one_of(
            st.fixed_dictionaries(
                {},
                optional={
                    "value": json_values,
                    "currency": st.one_of(st.sampled_from(("USD", "usd", "EUR")), json_values),
                    "contents": st.one_of(
                        st.lists(st.dictionaries(keys, json_values, max_size=3), max_size=3),
                        json_values,
                    ),
                },
            ),
            json_values,
        ),
        "page": st.one_of(st.fixed_dictionaries({"url": json_values}), json_values),
        "consent": consents,
        "limited_data_use": json_values,
        "app": json_values,
        "ad": json_values,
        "lead": json_values,
        "unknown": json_values,
    },
)


def nested(depth: int, kind: str) -> str:
    """A payload nested *depth* levels deep, in objects, lists or both."""
    if kind == "object":
        return '{"properties":' + '{"a":' * depth + "1" + "}" * depth + "}"
    if kind == "list":
        return '{"properties":{"a":' + "[" * depth + "1" + "]" * depth + "}}"
    return '{"user":' + '{"email":[' * depth + '"x@y.z"' + "]}" * depth + "}"


def dumps(value: Any) -> str:
    """JSON as a careless writer makes it: NaN and Infinity included, integers of any size."""
    return json.dumps(value, allow_nan=True, ensure_ascii=False)


payloads = st.one_of(
    json_values.map(dumps),
    structured.map(dumps),
    st.builds(nested, st.integers(0, 3000), st.sampled_from(("object", "list", "mixed"))),
    st.text(max_size=40),
    st.binary(max_size=40).map(RawText),
    st.binary(max_size=40),
    st.none(),
    st.integers(-(2**63), 2**63 - 1),
)
cells = st.one_of(
    st.none(),
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.sampled_from(("Purchase", "web", "app", "crm", "fax", "", "D34FV3JC77U1PDQ72P1G")),
    st.emails(),
    st.binary(max_size=20),
    st.binary(max_size=20).map(RawText),
)
wild_rows = st.fixed_dictionaries({"payload": payloads}, optional=dict.fromkeys(COLUMNS, cells))
# A valid envelope around a payload of the contract's shape: these reach the fake TikTok.
plausible_rows = st.fixed_dictionaries(
    {
        "event_id": st.text(min_size=1, max_size=30),
        "event": st.sampled_from(("Purchase", "Lead", "ViewContent", "My Custom Event", " Lead ")),
        "payload": st.one_of(structured.map(dumps), json_values.map(dumps)),
    },
    optional={
        "event_time": st.one_of(st.integers(-(2**63), 2**63 - 1), st.just(None), cells),
        "event_source": st.sampled_from(("web", "app", "offline", "crm")),
        "test_event_code": st.one_of(st.just(""), st.text(max_size=10)),
    },
)
rows = st.lists(st.one_of(wild_rows, plausible_rows), min_size=1, max_size=4)


# --- The property ------------------------------------------------------------------------------


def insert_raw(db_path: Path, fuzzed: list[dict[str, Any]]) -> None:
    """Insert the rows as given, keeping each value's SQLite type; refused inserts are skipped."""
    conn = sqlite3.connect(db_path, isolation_level=None)
    try:
        for row in [*fuzzed, purchase(10_000)]:
            names = ", ".join(row)
            marks = ", ".join(
                "CAST(? AS TEXT)" if isinstance(v, RawText) else "?" for v in row.values()
            )
            values = [v.data if isinstance(v, RawText) else v for v in row.values()]
            # OR IGNORE: a NOT NULL or unique violation is the application's own error.
            conn.execute(f"INSERT OR IGNORE INTO tiktok_outbox ({names}) VALUES ({marks})", values)
    finally:
        conn.close()


async def drain_everything(db_path: Path) -> None:
    """Drain the outbox against a fresh fake until nothing is due, moving the clock past waits."""
    store = await SQLiteStore.open(db_path)
    try:
        async with FakeTikTok(token=TOKEN) as fake, aiohttp.ClientSession() as session:
            harness = Harness(store, fake, session)
            for _ in range(6):
                await harness.drain()
                left = query(
                    db_path, "SELECT count(*) FROM tiktok_outbox WHERE status IN ('pending')"
                )
                if left == [(0,)]:
                    break
                harness.clock.advance(700)
    finally:
        await store.close()


@settings(
    max_examples=500 if SOAK else 50,
    deadline=None,
    derandomize=not SOAK,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(fuzzed=rows)
def test_arbitrary_rows_end_sent_or_dead(fuzzed: list[dict[str, Any]]) -> None:
    """Arbitrary column values and payloads never crash the worker; each row ends sent or dead."""
    with tempfile.TemporaryDirectory() as folder:
        db_path = Path(folder) / "outbox.db"
        migrate_sync(db_path)
        insert_raw(db_path, fuzzed)
        asyncio.run(asyncio.wait_for(drain_everything(db_path), 60))
        found = query(
            db_path,
            "SELECT id, status, last_code, last_error FROM tiktok_outbox WHERE event_id IS NOT"
            " 'order-10000'",
        )
        for row_id, status, code, reason in found:
            event(f"row ended {status} ({code})")  # shown by --hypothesis-show-statistics
            assert status in ("sent", "dead"), (row_id, status, code, reason)
            if status == "dead":
                assert code and reason, (row_id, code, reason)
        good = query(db_path, "SELECT status FROM tiktok_outbox WHERE event_id = 'order-10000'")
        assert good in ([("sent",)], []), good  # [] only if a fuzzed row took its key
