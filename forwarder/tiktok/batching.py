"""Group built events into TikTok requests: one destination each, capped by count and bytes."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import NamedTuple

import orjson

from forwarder.tiktok.build import Built, Destination
from forwarder.tiktok.spec import MAX_EVENTS

#: The keys build.build puts first in every event; they are outbox columns, not payload.
ENVELOPE = ("event", "event_time", "event_id")
_ENVELOPE_KEYS = frozenset(ENVELOPE)


class Item(NamedTuple):
    """One event, serialised once, with what the worker needs to settle its row.

    A named tuple, made once per event: see OutboxRow.
    """

    built: Built
    data: bytes

    @classmethod
    def of(cls, built: Built) -> Item:
        """Serialise *built*'s event; raises TypeError for what JSON cannot carry."""
        return cls(built, orjson.dumps(built.event))

    def stored(self) -> str:
        """The event as a sent row keeps it: the JSON sent, without the envelope columns.

        Cut from the bytes already serialised for the request rather than serialised again:
        with the envelope's three keys first (as build.build makes every event), the rest of
        ``data`` after them is exactly the JSON of the remaining keys.
        """
        event = self.built.event
        keys = iter(event)
        if (
            next(keys, None) != "event"
            or next(keys, None) != "event_time"
            or next(keys, None) != "event_id"
        ):
            rest = {key: value for key, value in event.items() if key not in _ENVELOPE_KEYS}
            return orjson.dumps(rest).decode()
        if len(event) == 3:
            return "{}"
        head = orjson.dumps(
            {
                "event": event["event"],
                "event_time": event["event_time"],
                "event_id": event["event_id"],
            }
        )
        # data is head without its closing brace, a comma, then the other keys and a brace.
        return "{" + self.data[len(head) :].decode()


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
        return head + b",".join([item.data for item in self.items]) + tail

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

    def subset(self, positions: Iterable[int]) -> Batch:
        """Return the batch of the events at *positions*, in that order."""
        items = self.items
        return Batch(self.destination, tuple(items[position] for position in positions))

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
    # Consecutive events usually share one destination (build.build even shares the object),
    # so the last destination's state stays in locals and the dicts are consulted only when the
    # destination changes: hashing a Destination runs Python code.
    dest: Destination | None = None
    group: list[Item] | None = None
    size_now = base = 0
    for item in items:
        here = item.built.destination
        if here is not dest:
            if dest is not None:
                used[dest] = size_now
            dest = here
            base = bases.get(here) or bases.setdefault(here, envelope_size(here))
            group = pending.get(here)
            size_now = used.get(here, base)
        size = len(item.data)
        if base + size > max_bytes:
            oversize.append(item)
            continue
        if group is None:
            group = pending[here] = []
        grown = size_now + size + (1 if group else 0)
        if group and (len(group) >= max_events or grown > max_bytes):
            batches.append(Batch(here, tuple(group)))
            group = pending[here] = []
            grown = base + size
        group.append(item)
        size_now = grown
    batches.extend(Batch(d, tuple(g)) for d, g in pending.items() if g)
    return batches, oversize
