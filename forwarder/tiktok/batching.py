"""Group built events into TikTok requests: one route each, capped by count and bytes."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import orjson

from forwarder.destination import Batch, Built, Item, Route
from forwarder.tiktok.spec import MAX_EVENTS

#: The keys build.build puts first in every event; they are outbox columns, not payload.
ENVELOPE = ("event", "event_time", "event_id")
_ENVELOPE_KEYS = frozenset(ENVELOPE)
FIT_SPARE = 0.05  # of a request's bytes left free when claims are sized to fill one request


def serialise(built: Built) -> Item:
    """Serialise *built*'s event once; raises TypeError for what JSON cannot carry."""
    return Item(built, orjson.dumps(built.event))


def stored(item: Item) -> str:
    """The event as a sent row keeps it: the JSON sent, without the envelope columns.

    Cut from the bytes already serialised for the request rather than serialised again:
    with the envelope's three keys first (as build.build makes every event), the rest of
    ``data`` after them is exactly the JSON of the remaining keys.
    """
    event = item.built.event
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
        {"event": event["event"], "event_time": event["event_time"], "event_id": event["event_id"]}
    )
    # data is head without its closing brace, a comma, then the other keys and a brace.
    return "{" + item.data[len(head) :].decode()


def envelope(route: Route) -> tuple[bytes, bytes]:
    """Return the bytes before and after the events of a request body (§2.1)."""
    top: dict[str, str] = {"event_source": route.event_source, "event_source_id": route.pixel}
    if route.test_event_code:
        top["test_event_code"] = route.test_event_code
    head = orjson.dumps(top)[:-1] + b',"data":['
    return head, b"]}"


def body(batch: Batch) -> bytes:
    """Return the JSON request body of *batch*."""
    head, tail = envelope(batch.route)
    return head + b",".join([item.data for item in batch.items]) + tail


def envelope_size(route: Route) -> int:
    """Bytes of a request body around its events."""
    head, tail = envelope(route)
    return len(head) + len(tail)


def fitting(items: Sequence[Item], max_events: int, max_bytes: int) -> int:
    """How many rows a claim like the one that made *items* may take for its busiest route to
    fill one request, with room to spare.

    The room left (FIT_SPARE) absorbs a claim whose events run larger than the last one's: a
    request that overflows by a few events sends them as a request of their own. Events no
    request can carry are refused, not sent, so they measure nothing.
    """
    used: dict[Route, int] = {}  # bytes per route, each event with its comma
    # Consecutive events usually share one route object: hash a Route only when it changes.
    route: Route | None = None
    run = 0
    for item in items:
        size = len(item.data) + 1
        if size > max_bytes:
            continue
        here = item.built.route
        if here is not route:
            if route is not None:
                used[route] = used.get(route, 0) + run
            route, run = here, 0
        run += size
    if route is None:
        return max_events
    used[route] = used.get(route, 0) + run
    busiest = max(used, key=used.__getitem__)
    room = (max_bytes - envelope_size(busiest)) * (1 - FIT_SPARE)
    return max(1, min(max_events, int(room * len(items) / used[busiest])))


def make_batches(
    items: Iterable[Item], max_events: int, max_bytes: int
) -> tuple[list[Batch], list[Item]]:
    """Pack events into batches per route, in claim order.

    Returns the batches and the items too large to fit any request on their own.
    A test event's route carries its code, so it is never mixed with real traffic (§7.2).
    """
    max_events = min(max_events, MAX_EVENTS)
    pending: dict[Route, list[Item]] = {}
    used: dict[Route, int] = {}  # body bytes if the batch were closed now
    bases: dict[Route, int] = {}
    batches: list[Batch] = []
    oversize: list[Item] = []
    # Consecutive events usually share one route (build.build even shares the object), so the
    # last route's state stays in locals and the dicts are consulted only when the route
    # changes: hashing a Route runs Python code.
    dest: Route | None = None
    group: list[Item] | None = None
    size_now = base = 0
    for item in items:
        here = item.built.route
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
