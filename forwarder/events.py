"""The outbox row as the daemon sees it once claimed."""

from __future__ import annotations

from dataclasses import dataclass

#: The values of ``tiktok_outbox.status``.
PENDING = "pending"
INFLIGHT = "inflight"
SENT = "sent"
DEAD = "dead"
STATUSES = (PENDING, INFLIGHT, SENT, DEAD)


@dataclass(frozen=True, slots=True)
class OutboxRow:
    """One claimed row of ``tiktok_outbox``, exactly as the application wrote it.

    Columns arrive untyped from the database: the application may have written anything, so
    the payload builder validates them and never trusts these annotations alone.
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
