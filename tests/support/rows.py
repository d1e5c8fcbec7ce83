"""Helpers shared by the worker and end-to-end tests."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson


class ManualClock:
    """A wall clock the test moves by hand, so retries come due without sleeping."""

    def __init__(self, start: float | None = None) -> None:
        self.now = time.time() if start is None else start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


async def wait_until(
    condition: Callable[[], bool | Awaitable[bool]], timeout: float = 20.0, what: str = ""
) -> None:
    """Poll *condition* until it holds; fail after *timeout* seconds (a bound, not a sleep)."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or condition}")
        await asyncio.sleep(0.02)


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
