"""Whose fault a refusal is, and the pixels held back for their own; pure state.

A request carries one (event_source, pixel, test_event_code) (tiktok-events-api.md §2.1). A row
may name its own pixel or test code; when TikTok refuses one of those, the fault is that row's
and the rows that share it, not the destination's: the default pixel keeps flowing. Only a
fault of the token, of the default pixel (TIKTOK_PIXEL_CODE) or of TIKTOK_TEST_EVENT_CODE
pauses all delivery.

- 40001 PERMISSION_ERROR, "No permission to operate pixel code" (§5.1), for a row's own pixel:
  that pixel is *held*. Its rows go back to pending, no attempt counted, and one of its events
  probes TikTok at a growing interval, capped, until TikTok takes the pixel again.
- 40002 naming ``test_event_code`` for a row's own test code: those rows are dead with TikTok's
  reason; a test event is not worth holding.
- Any other refusal of the whole request for a row's own pixel (40002 naming
  ``event_source_id``: the pixel is malformed): those rows are dead, as before.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field
from typing import Any, Final

from forwarder.backoff import probe_interval_s
from forwarder.classify import Outcome, Verdict

#: PAUSE codes about the request's pixel rather than the token: 40001 PERMISSION_ERROR (§5.1) and
#: 40007 NOT_EXIST (§5.3), which for a row's own pixel says that pixel is not there.
PIXEL_CODES: Final = frozenset({"40001", "40007"})

_TEST_CODE: Final = re.compile(r"(?<![\w.])test_event_code\b", re.IGNORECASE)
_TOKEN: Final = re.compile(r"(?<![\w.])access[ _-]?token\b", re.IGNORECASE)


class Scope(enum.StrEnum):
    """Whom a PAUSE answer, or a REJECT of the whole request, is about."""

    #: The token, the default pixel or TIKTOK_TEST_EVENT_CODE: pause all delivery.
    DESTINATION = "destination"
    #: A row's own pixel: hold that pixel's rows back, deliver the rest.
    PIXEL = "pixel"
    #: A row's own pixel or test code, refused for good: dead-letter the request's rows.
    ROWS = "rows"


def scope(
    outcome: Outcome,
    pixel: str,
    test_code: str | None,
    default_pixel: str,
    default_test_code: str | None,
) -> Scope:
    """Say whose fault *outcome* is, for a request to *pixel* with *test_code*.

    *outcome* is a PAUSE, or a REJECT of the whole request (``whole_request``).
    """
    own_pixel = pixel != default_pixel.strip()
    if outcome.verdict is not Verdict.REJECT:
        return Scope.PIXEL if outcome.code in PIXEL_CODES and own_pixel else Scope.DESTINATION
    if _TOKEN.search(outcome.message):
        return Scope.DESTINATION
    if _TEST_CODE.search(outcome.message):
        own_code = bool(test_code) and test_code != (default_test_code or None)
        return Scope.ROWS if own_code else Scope.DESTINATION
    return Scope.ROWS if own_pixel else Scope.DESTINATION


@dataclass
class Hold:
    """One pixel TikTok refused: why, since when, and when its next probe may go out."""

    code: str
    message: str
    since: float
    probe_at: float
    failures: int = 1
    #: A probe went out since the last refusal was counted.
    probed: bool = False


@dataclass
class Holds:
    """The pixels held back, each probed on its own growing interval (backoff.probe_interval_s).

    The worker asks take_probe() before sending a held pixel's batch: one event goes out as the
    probe when it is due, the rest wait until hold.probe_at. A refusal counts once per probe, so
    several requests refused together do not stretch the interval.
    """

    initial_s: float
    max_s: float
    held: dict[str, Hold] = field(default_factory=dict)

    def hold(self, pixel: str, now: float, code: str, message: str) -> Hold:
        """Record that TikTok refused *pixel*; return its hold, with the next probe time."""
        hold = self.held.get(pixel)
        if hold is None:
            hold = self.held[pixel] = Hold(code, message, now, now + self._interval(1))
        elif hold.probed:
            hold.failures += 1
            hold.probed = False
            hold.probe_at = now + self._interval(hold.failures)
        hold.code, hold.message = code, message
        return hold

    def release(self, pixel: str) -> Hold | None:
        """TikTok took *pixel* again: forget its hold; return it (None if it was not held)."""
        return self.held.pop(pixel, None)

    def take_probe(self, pixel: str, now: float) -> bool:
        """Whether one event of held *pixel* may go out now as its probe.

        If so, the next probe is planned as if this one fails, and the pixel's other rows wait
        for it (hold.probe_at).
        """
        hold = self.held.get(pixel)
        if hold is None or now < hold.probe_at:
            return False
        hold.probed = True
        hold.probe_at = now + self._interval(hold.failures + 1)
        return True

    def probe_now(self, now: float) -> None:
        """Let every held pixel probe with its next row (the token was just reloaded)."""
        for hold in self.held.values():
            hold.probe_at = min(hold.probe_at, now)

    def state(self) -> dict[str, dict[str, Any]]:
        """The holds as `forwarder status` shows them (a pixel code is not a secret)."""
        return {
            pixel: {"code": h.code, "message": h.message, "since": h.since, "probe_at": h.probe_at}
            for pixel, h in sorted(self.held.items())
        }

    def _interval(self, failures: int) -> float:
        return probe_interval_s(failures, self.initial_s, self.max_s)
