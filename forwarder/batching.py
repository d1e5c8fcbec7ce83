"""Group built events into TikTok requests: one destination each, capped by count and bytes."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import orjson

from forwarder.payload import Built, Destination

#: tiktok-events-api.md §3.1: at most 1,000 events per request (S1, S4).
MAX_EVENTS = 1000


@dataclass(frozen=True, slots=True)
class Item:
    """One event, serialised once, with what the worker needs to settle its row."""

    built: Built
    data: bytes

    @classmethod
    def of(cls, built: Built) -> Item:
        """Serialise *built*'s event; raises TypeError for what JSON cannot carry."""
        return cls(built, orjson.dumps(built.event))


@dataclass(frozen=True, slots=True)
class Batch:
    """The events of one request, all to the same (event_source, pixel, test_event_code)."""

    destination: Destination
    items: tuple[Item, ...]

    def envelope(self) -> tuple[bytes, bytes]:
        """Return the bytes before and after the events of the request body (§2.1)."""
        top: dict[str, str] = {
            "event_source": self.destination.event_source,
            "event_source_id": self.destination.pixel,
        }
        if self.destination.test_event_code:
            top["test_event_code"] = self.destination.test_event_code
        head = orjson.dumps(top)[:-1] + b',"data":['
        return head, b"]}"

    def body(self) -> bytes:
        """Return the JSON request body."""
        head, tail = self.envelope()
        return head + b",".join(item.data for item in self.items) + tail

    def row_ids(self) -> list[int]:
        """Return the outbox ids of the events."""
        return [item.built.row_id for item in self.items]

    def halves(self) -> tuple[Batch, Batch]:
        """Split in two (to find the event TikTok rejects); needs at least two events."""
        middle = len(self.items) // 2
        return (
            Batch(self.destination, self.items[:middle]),
            Batch(self.destination, self.items[middle:]),
        )

    def without(self, index: int) -> Batch:
        """Return the batch without the event at *index*."""
        return Batch(self.destination, self.items[:index] + self.items[index + 1 :])


def envelope_size(destination: Destination) -> int:
    """Bytes of a request body around its events."""
    head, tail = Batch(destination, ()).envelope()
    return len(head) + len(tail)


def make_batches(
    items: Iterable[Item], max_events: int, max_bytes: int
) -> tuple[list[Batch], list[Item]]:
    """Pack events into batches per destination, in claim order.

    Returns the batches and the items too large to fit any request on their own.
    A test event's destination carries its code, so it is never mixed with real traffic (§7.2).
    """
    max_events = min(max_events, MAX_EVENTS)
    pending: dict[Destination, list[Item]] = {}
    used: dict[Destination, int] = {}  # body bytes if the batch were closed now
    bases: dict[Destination, int] = {}
    batches: list[Batch] = []
    oversize: list[Item] = []
    for item in items:
        dest = item.built.destination
        base = bases.get(dest) or bases.setdefault(dest, envelope_size(dest))
        if base + len(item.data) > max_bytes:
            oversize.append(item)
            continue
        items = pending.setdefault(dest, [])
        grown = used.get(dest, base) + len(item.data) + (1 if items else 0)
        if items and (len(items) >= max_events or grown > max_bytes):
            batches.append(Batch(dest, tuple(items)))
            items = pending[dest] = []
            grown = base + len(item.data)
        items.append(item)
        used[dest] = grown
    batches.extend(Batch(dest, tuple(items)) for dest, items in pending.items() if items)
    return batches, oversize
