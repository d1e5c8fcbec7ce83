"""Requests to the track endpoint of the fake TikTok, as a client would make them."""

from __future__ import annotations

import hashlib
from typing import Any

import aiohttp
import orjson

from forwarder.tiktok.spec import TRACK_PATH

from .harness import TOKEN

HASHED = hashlib.sha256(b"alice@example.com").hexdigest()


def event(event_id: str = "e-1", **extra: Any) -> dict[str, Any]:
    """A valid web event (tiktok-events-api.md §2.5)."""
    return {
        "event": "Purchase",
        "event_time": 1_760_000_000,
        "event_id": event_id,
        "user": {"email": [HASHED], "ip": "203.0.113.7", "user_agent": "UA"},
        "page": {"url": "https://shop.example/thanks"},
        "properties": {"currency": "USD", "value": 46.0, "contents": [{"content_id": "sku-1"}]},
        **extra,
    }


def body(*events: dict[str, Any], **top: Any) -> dict[str, Any]:
    """A request body around *events*."""
    return {"event_source": "web", "event_source_id": "PIXEL1", "data": list(events), **top}


async def post(
    session: aiohttp.ClientSession,
    url: str,
    payload: Any,
    *,
    token: str | None = TOKEN,
    raw: bytes | None = None,
    timeout_s: float = 10.0,
) -> tuple[int, dict[str, Any]]:
    """POST to the track endpoint; return (HTTP status, decoded JSON body)."""
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Access-Token"] = token
    data = raw if raw is not None else orjson.dumps(payload)
    async with session.post(
        url + TRACK_PATH,
        data=data,
        headers=headers,
        timeout=aiohttp.ClientTimeout(total=timeout_s),
    ) as response:
        return response.status, orjson.loads(await response.read())
