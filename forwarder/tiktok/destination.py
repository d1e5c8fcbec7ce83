"""TikTok's Events API as the worker's destination: build, batch, send, classify."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Protocol

from forwarder.destination import OVERSIZE, Batch, Item, Refused
from forwarder.errors import TransportError
from forwarder.events import OutboxRow
from forwarder.outcome import ApiResponse, Outcome
from forwarder.tiktok.batching import body, fitting, make_batches, serialise, stored
from forwarder.tiktok.build import BuildOptions, build
from forwarder.tiktok.classify import classify, classify_transport
from forwarder.tiktok.spec import MAX_EVENTS


class Sender(Protocol):
    """Sends one request body (forwarder.tiktok.client.TikTokClient, or a test's fake)."""

    async def send(self, body: bytes) -> ApiResponse:
        """POST *body*; raise TransportError when no answer came."""
        ...


class TikTok:
    """The Destination for TikTok: its event model, its request limits and its code table."""

    name = "TikTok"

    def __init__(
        self,
        sender: Sender,
        options: BuildOptions,
        *,
        max_events: int = MAX_EVENTS,
        max_bytes: int = 1_000_000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.sender = sender
        self.options = options
        self.max_events = max_events
        self.max_bytes = max_bytes
        self.clock = clock
        self.default_pixel = options.default_pixel
        self.default_test_code = options.test_event_code

    def build(self, row: OutboxRow, now: float) -> Item | Refused:
        """Build *row*'s event and serialise it, or say why it must not be sent."""
        result = build(row, self.options, now)
        if isinstance(result, Refused):
            return result
        return serialise(result)

    def batches(self, items: Sequence[Item]) -> tuple[list[Batch], list[Refused]]:
        """Pack *items* into requests under TikTok's caps and the configured ones."""
        batches, oversize = make_batches(items, self.max_events, self.max_bytes)
        refused = [
            Refused(
                item.built.row_id,
                OVERSIZE,
                f"the event is {len(item.data)} bytes, more than one request may carry "
                f"(FORWARDER_BATCH_MAX_BYTES={self.max_bytes})",
            )
            for item in oversize
        ]
        return batches, refused

    def fitting(self, items: Sequence[Item]) -> int:
        """How many events like *items* fit one request under both caps."""
        return fitting(items, self.max_events, self.max_bytes)

    def stored(self, item: Item) -> str:
        """Return the event as sent, without the columns the row already holds."""
        return stored(item)

    async def send(self, batch: Batch) -> Outcome:
        """POST *batch* and read TikTok's answer by its code."""
        try:
            response = await self.sender.send(body(batch))
        except TransportError as error:
            return classify_transport(error)
        return classify(response, self.clock())
