"""What ``forwarder check --payload`` reports: findings, each an error or a warning."""

from __future__ import annotations

from dataclasses import dataclass

from forwarder.tiktok.checks import UNKNOWN_KEY

ERROR = "error"
WARNING = "warning"
#: The code of the one error the builder does not give: a column ``enqueue`` does not know.
ENQUEUE_UNKNOWN_COLUMN = f"enqueue/{UNKNOWN_KEY}"


@dataclass(frozen=True, slots=True)
class Finding:
    """One problem in an event; *message* never holds an identifier's value."""

    level: str  # ERROR or WARNING
    field: str  # e.g. "event", "properties.currency", "user.phone[0]"
    message: str  # what is wrong, what it costs, how to fix it
    code: str = ""  # an error's reason code, as the daemon stores it: "malformed/value", ...
