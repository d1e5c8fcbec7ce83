"""Write an order and its TikTok Purchase event in one PostgreSQL transaction (Python, asyncpg).

Usage: python insert_postgres.py [URL]   (or DATABASE_URL=postgresql://user:pass@host/db)
"""

import asyncio
import json
import os
import sys

import asyncpg


async def place_order(conn: asyncpg.Connection, order: dict) -> None:
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
    async with conn.transaction():  # COMMIT on success, ROLLBACK on an exception
        await conn.execute(
            "INSERT INTO orders (id, email, total) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
            order["id"],
            order["email"],
            order["total"],
        )
        await conn.execute(
            "INSERT INTO tiktok_outbox (event_id, event, payload) VALUES ($1, 'Purchase', $2)"
            " ON CONFLICT DO NOTHING",
            f"order-{order['id']}",
            json.dumps(payload),
        )


async def main() -> None:
    url = sys.argv[1] if len(sys.argv) > 1 else os.environ["DATABASE_URL"]
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS orders"
            " (id bigint PRIMARY KEY, email text, total numeric(12, 2))"
        )
        await place_order(
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
    finally:
        await conn.close()


if __name__ == "__main__":
    asyncio.run(main())
