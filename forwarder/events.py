"""The outbox row as the daemon sees it once claimed."""

from __future__ import annotations

from typing import NamedTuple

#: The values of ``tiktok_outbox.status``.
PENDING = "pending"
INFLIGHT = "inflight"
SENT = "sent"
DEAD = "dead"
STATUSES = (PENDING, INFLIGHT, SENT, DEAD)


class OutboxRow(NamedTuple):
    """One claimed row of ``tiktok_outbox``, exactly as the application wrote it.

    Columns arrive untyped from the database: the application may have written anything, so
    the payload builder validates them and never trusts these annotations alone. A named tuple
    rather than a frozen dataclass: as immutable, and much cheaper to make, once per claimed row
    (docs/performance.md has the figures).
    """

    id: int
    event_id: object
    event: object
    event_time: object
    payload: object
    pixel_code: object
    event_source: object
    test_event_code: object
    attempts: int
    created_at: float
    #: NULL or ``tiktok``: TikTok's shape; ``meta_capi``: one Meta server event (migration 0004).
    #: Last, with a default: a row made without it (enqueue, the tests) is a TikTok row.
    payload_format: object = None
