"""The pixels held back for their own fault, each on its own probe interval; pure state.

A row may name its own pixel; when TikTok refuses that pixel (decide.py's HOLD: 40001, 40007
for a pixel that is not TIKTOK_PIXEL_CODE), the fault is that pixel's, not the destination's:
its rows go back to pending, no attempt counted, one of its events probes TikTok at a growing
interval, capped, until TikTok takes the pixel again, and the default pixel keeps flowing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from forwarder.backoff import probe_interval_s


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
