"""The delivery worker: claim due rows, build and batch them, send, decide, settle.

loop.py runs the loop and its lifecycle; upkeep.py the periodic tasks; intake.py claims and
builds; delivery.py sends, a task per request; settle.py applies what decide.py (pure) decides
of each answer; calls.py races database calls against the stop and the shutdown deadline.
The platform is a forwarder.destination.Destination: the worker never speaks its format.
"""

from forwarder.worker.config import Totals, WorkerConfig
from forwarder.worker.loop import SHUTDOWN_FINISH_S, STORE_RETRY_MAX_S, Worker
from forwarder.worker.upkeep import PRUNE_AGAIN_S, PRUNE_BATCH

__all__ = [
    "PRUNE_AGAIN_S",
    "PRUNE_BATCH",
    "SHUTDOWN_FINISH_S",
    "STORE_RETRY_MAX_S",
    "Totals",
    "Worker",
    "WorkerConfig",
]
