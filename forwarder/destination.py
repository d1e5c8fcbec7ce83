"""The worker's view of an ad platform: the Destination protocol and the values it passes.

A destination turns a claimed row into the bytes of one event (or refuses it), groups events
into requests under its own limits, and sends a request, answering with an ``Outcome``.
TikTok's is ``forwarder.tiktok.destination.TikTok``; a second platform would be a sibling
subpackage with its own, and the worker would not change.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

from forwarder.events import OutboxRow
from forwarder.outcome import Outcome

#: The closed set of ``Refused.code`` values, stored as a dead row's ``last_error`` code.
MALFORMED = "malformed"
TOO_OLD = "too_old"
OVERSIZE = "oversize"


@dataclass(frozen=True, slots=True)
class Route:
    """Where a request goes: events of different routes never share a request, and the pixel
    is what a refusal of the source holds back."""

    event_source: str
    pixel: str
    test_event_code: str | None


class Built(NamedTuple):
    """An event ready to send: one element of the request's event array.

    A named tuple, made once per event: see OutboxRow.
    """

    row_id: int
    route: Route
    event: dict[str, Any]  # its "event" key is the event name the metrics count
    match_keys: frozenset[str]  # the identifiers sent that let the platform match a person
    warnings: tuple[str, ...]  # human-readable, never holding a raw identifier value
    created_at: float
    #: Fields of a converted row's source format not carried over, as metric labels.
    dropped: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Refused:
    """A row that must not be sent; *reason* names the field and never holds its value.

    The reason starts with the reason code, ``[code/rule]`` (e.g. ``[malformed/value]``), which
    ``forwarder check --payload`` reports for the same row.
    """

    row_id: int
    code: str  # MALFORMED, TOO_OLD or OVERSIZE
    reason: str
    rule: str = ""
    field: str = ""  # the column or payload path it is about, e.g. "payload.properties.value"

    @property
    def reason_code(self) -> str:
        """``code/rule``, e.g. ``malformed/type``: a closed set, stable across releases."""
        return f"{self.code}/{self.rule}"


class Item(NamedTuple):
    """One event and its serialised bytes, made once and sent as they are."""

    built: Built
    data: bytes


@dataclass(frozen=True, slots=True)
class Batch:
    """The events of one request, all on the same route."""

    route: Route
    items: tuple[Item, ...]

    def row_ids(self) -> list[int]:
        """Return the outbox ids of the events."""
        return [item.built.row_id for item in self.items]

    def subset(self, positions: Iterable[int]) -> Batch:
        """Return the batch of the events at *positions*, in that order."""
        items = self.items
        return Batch(self.route, tuple(items[position] for position in positions))


class Destination(Protocol):
    """What the worker delivers through."""

    #: The platform's name, as reasons and logs say it.
    name: str
    #: The pixel and test code the settings give: a refusal of them pauses delivery for the
    #: operator to fix, where a row's own pixel is only held back.
    default_pixel: str
    default_test_code: str | None

    def build(self, row: OutboxRow, now: float) -> Item | Refused:
        """Build *row*'s event, or say why it must not be sent; may raise on a broken row."""
        ...

    def batches(self, items: Sequence[Item]) -> tuple[list[Batch], list[Refused]]:
        """Group *items* into requests, in claim order; refuse those no request can carry."""
        ...

    def fitting(self, items: Sequence[Item]) -> int:
        """Return how many events like *items* one request carries, at most."""
        ...

    def stored(self, item: Item) -> str:
        """Return what a sent row keeps of its event (identifiers hashed as they were sent)."""
        ...

    async def send(self, batch: Batch) -> Outcome:
        """Send *batch* and say what the answer (or its absence) means; never raise for it."""
        ...
