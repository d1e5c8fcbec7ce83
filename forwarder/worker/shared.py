"""What the worker's parts share: their collaborators and the state of one run."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from forwarder.destination import Destination
from forwarder.events import OutboxRow
from forwarder.holds import Holds
from forwarder.metrics import Metrics
from forwarder.pacing import Pacer
from forwarder.store.base import OutboxStore
from forwarder.worker.calls import Calls
from forwarder.worker.config import Totals, WorkerConfig


@dataclass(eq=False)
class Shared:
    """The collaborators and the run's state, handed to the loop, upkeep, intake, delivery and
    settling; each part changes only what its docstring says it owns."""

    store: OutboxStore
    destination: Destination
    config: WorkerConfig
    pacer: Pacer
    metrics: Metrics
    owner: str
    clock: Callable[[], float]
    rng: random.Random
    log: Any  # a structlog logger
    holds: Holds
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    #: Wakes the loop: a delivery ended, a slot freed, stop() was called.
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    calls: Calls = field(init=False)
    totals: Totals = field(default_factory=Totals)
    #: The rows this worker holds a lease on, by id (claimed, not yet settled or released).
    leased: dict[int, OutboxRow] = field(default_factory=dict)
    #: Events per answer code since the last delivery summary.
    codes: Counter[str] = field(default_factory=Counter)

    def __post_init__(self) -> None:
        self.calls = Calls(self.stopping)
