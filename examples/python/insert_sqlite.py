"""Write an order and its TikTok Purchase event in one SQLite transaction (Python, sqlite3).

Usage: python insert_sqlite.py [PATH]   (or DB_PATH=...; default forwarder.db)
"""

import json
import os
import sqlite3
import sys


def place_order(conn: sqlite3.Connection, order: dict) -> None:
    """Insert the order and its outbox row; both are committed or neither is."""
    payload = {
        # Raw identifiers: the daemon normalises and hashes email and phone itself.
        "user": {
            "email": order["email"],
            "phone": order["phone"],
            "ip": order["ip"],
            "user_agent": order["user_agent"],
            "ttclid": order["ttclid"],
            "ttp": order["ttp"],
        },
        "properties": {
            "currency": "USD",
            "value": order["total"],
            "content_type": "product",
            "contents": order["contents"],
        },
        "page": {"url": order["url"]},
        # The visitor's choice in your consent banner; forwarder enforces it.
        "consent": {"ad_user_data": "granted", "ad_personalization": "granted"},
    }
    with conn:  # one transaction: COMMIT on success, ROLLBACK on an exception
        conn.execute(
            "INSERT INTO orders (id, email, total) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
            (order["id"], order["email"], order["total"]),
        )
        conn.execute(
            "INSERT INTO tiktok_outbox (event_id, event, payload) VALUES (?, 'Purchase', ?)"
            " ON CONFLICT DO NOTHING",
            (f"order-{order['id']}", json.dumps(payload)),
        )


def main() -> None:
    path = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("DB_PATH", "forwarder.db")
    # timeout=5 is SQLite's busy timeout (PRAGMA busy_timeout = 5000): wait for the daemon's
    # short write transactions instead of failing with "database is locked".
    conn = sqlite3.connect(path, timeout=5)
    conn.execute(
        "CREATE TABLE IF NOT EXISTS orders (id INTEGER PRIMARY KEY, email TEXT, total REAL)"
    )
    place_order(
        conn,
        {
            "id": 10492,
            "email": "Alice@Example.com",
            "phone": "+1 213 373 4253",
            "ip": "203.0.113.7",
            "user_agent": "Mozilla/5.0 (X11; Linux x86_64)",
            "ttclid": "E.C.P.abc123",
            "ttp": "2Xwabc123",
            "total": 46.0,
            "contents": [{"content_id": "sku-1077218", "quantity": 2, "price": 23.0}],
            "url": "https://shop.example/checkout/thanks",
        },
    )
    conn.close()


if __name__ == "__main__":
    main()
