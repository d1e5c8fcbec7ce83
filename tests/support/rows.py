"""Outbox rows as an application writes and reads them, with its own sqlite3 connection."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import orjson


def insert(db_path: Path, rows: list[dict[str, object]]) -> None:
    """Insert rows as an application would, with its own sqlite3 connection."""
    conn = sqlite3.connect(db_path, timeout=10)
    try:
        with conn:
            for row in rows:
                names = ", ".join(row)
                marks = ", ".join("?" for _ in row)
                conn.execute(
                    f"INSERT INTO tiktok_outbox ({names}) VALUES ({marks}) ON CONFLICT DO NOTHING",
                    list(row.values()),
                )
    finally:
        conn.close()


def query(db_path: Path, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Run one query with a separate connection, as an application or operator would."""
    conn = sqlite3.connect(db_path, timeout=10)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def statuses(db_path: Path) -> dict[str, int]:
    """Count rows per status."""
    return dict(query(db_path, "SELECT status, count(*) FROM tiktok_outbox GROUP BY status"))


def purchase(i: int, **payload: Any) -> dict[str, Any]:
    """A realistic Purchase row with raw identifiers, as an application writes it."""
    body = {
        "user": {
            "email": f" Buyer{i}@Example.com ",
            "phone": f"+1 (213) 555-{i % 10000:04d}",
            "external_id": f"user-{i}",
            "ip": "203.0.113.7",
            "user_agent": "Mozilla/5.0",
            "ttclid": f"E.C.P.{i}",
        },
        "properties": {
            "currency": "USD",
            "value": 10.5,
            "contents": [{"content_id": f"sku-{i % 7}", "quantity": 1, "price": 10.5}],
        },
        "page": {"url": f"https://shop.example/thanks?o={i}"},
    }
    body.update(payload)
    return {"event_id": f"order-{i}", "event": "Purchase", "payload": orjson.dumps(body).decode()}


def purchases(first: int, last: int, **columns: object) -> list[dict[str, object]]:
    """Purchase rows *first*..*last*-1 with extra outbox columns."""
    return [{**purchase(i), **columns} for i in range(first, last)]
