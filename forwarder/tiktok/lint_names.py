"""The lint's advice on an event's name and time: TikTok's standard names, renamed and
sunset ones, likely misspellings; times in milliseconds, in the future, past attribution.

§ are to tiktok-events-api.md.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

from forwarder.tiktok.build_row import MILLISECONDS_HINT
from forwarder.tiktok.checks import days
from forwarder.tiktok.findings import ERROR, WARNING, Finding
from forwarder.tiktok.spec import APP_EVENTS, RENAMED_EVENTS, SUNSET_EVENTS, WEB_EVENTS

#: §3.3: TikTok's longest attribution window (click-through, 28 days; view-through is 7).
ATTRIBUTION_WINDOW_S = 28 * 86400.0
#: The builder sends future times as now; a few minutes of clock skew is not worth a warning.
FUTURE_TOLERANCE_S = 5 * 60.0
#: Edit distance (case-insensitive) within which an unknown name is taken for a misspelling.
MAX_TYPO_DISTANCE = 2


def name_advice(name: str, source: str) -> Iterator[Finding]:
    """Warn about an event name that is legacy, soft-deprecated, misspelt or custom."""
    # §8: names are case-sensitive; the standard list depends on event_source.
    standard = APP_EVENTS if source == "app" else WEB_EVENTS
    if name in standard:
        return
    if source != "app" and name in RENAMED_EVENTS:
        new = RENAMED_EVENTS[name]
        yield Finding(
            WARNING,
            "event",
            f"{name} is the legacy name of {new}: since May 2025 TikTok converts it to {new} "
            f"on its side, but a Pixel sending {new} will not deduplicate against it (the key "
            f"is event + event_id); send {new}",
        )
        return
    if source != "app" and name in SUNSET_EVENTS:
        yield Finding(
            WARNING,
            "event",
            f"{name} is soft-deprecated: TikTok supports it until 2027, then sunsets it, and "
            f"its history cannot move to another event; switch now to {SUNSET_EVENTS[name]}",
        )
        return
    if source == "web" and name.lower() == "pageview":
        yield Finding(
            WARNING,
            "event",
            "PageView is not a TikTok standard event: the Pixel reports page views in the "
            "browser, and sent server-side it is a custom event TikTok does not optimise on; "
            "track page views with the Pixel only",
        )
        return
    yield from _custom_name(name, source)


def _custom_name(name: str, source: str) -> Iterator[Finding]:
    """A name TikTok does not know: a likely misspelling, or a custom event."""
    suggestion = suggest(name, source)
    if suggestion is not None:
        yield Finding(
            ERROR if source == "offline" else WARNING,
            "event",
            f"not a standard event name (names are case-sensitive): did you mean "
            f"{suggestion}? As written it is a custom event, which TikTok will not optimise on",
        )
    elif source == "offline":
        yield Finding(
            ERROR,
            "event",
            "custom event: offline event sets accept standard events only "
            "(docs/tiktok-events-api.md §8.1); use one of " + ", ".join(WEB_EVENTS),
        )
    elif source in ("web", "app"):
        other = WEB_EVENTS if source == "app" else APP_EVENTS
        note = (
            " (a standard web event, not an app one)"
            if source == "app"
            else " (a standard app event, not a web one)"
        )
        note = note if name in other else ""
        yield Finding(
            WARNING,
            "event",
            f"custom event{note}: TikTok will not optimise on it; use a standard {source} "
            "event if one fits",
        )
    # crm: custom names are what the field comment asks for (§2.2), so they are not reported.


def suggest(name: str, source: str) -> str | None:
    """Return the standard name *name* looks like a misspelling of, or None."""
    candidates: dict[str, str] = {n: n for n in (APP_EVENTS if source == "app" else WEB_EVENTS)}
    if source != "app":
        candidates.update(RENAMED_EVENTS)
        candidates.update({old: old for old in SUNSET_EVENTS})
    lowered = name.lower()
    best: tuple[int, str] | None = None
    for candidate, meant in candidates.items():
        distance = _edit_distance(lowered, candidate.lower(), MAX_TYPO_DISTANCE)
        if distance <= MAX_TYPO_DISTANCE and (best is None or distance < best[0]):
            best = (distance, meant)
    return None if best is None else best[1]


def _edit_distance(a: str, b: str, limit: int) -> int:
    """Levenshtein distance of *a* and *b*, or limit + 1 once it is certainly larger."""
    if abs(len(a) - len(b)) > limit:
        return limit + 1
    previous = list(range(len(b) + 1))
    for i, char_a in enumerate(a, 1):
        current = [i]
        for j, char_b in enumerate(b, 1):
            current.append(
                min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (char_a != char_b))
            )
        if min(current) > limit:
            return limit + 1
        previous = current
    return previous[-1]


def time_advice(value: object, now: float, max_age_s: float) -> Iterator[Finding]:
    """Warn about an event_time TikTok would misread: a fraction, milliseconds, future, old."""
    # §2.2: integer Unix seconds, UTC. Absent, the daemon uses the insert time; of another
    # type, the builder refuses it.
    if isinstance(value, float) and math.isfinite(value):
        if not value.is_integer():
            yield Finding(
                WARNING,
                "event_time",
                "event_time has a fraction of a second: the daemon truncates it to whole "
                "seconds, as TikTok takes integer Unix seconds; send an integer",
            )
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        return
    if value >= MILLISECONDS_HINT:
        yield Finding(
            WARNING,
            "event_time",
            "event_time looks like milliseconds: the daemon sends the event as happening "
            "now, moving it away from the click it follows; divide by 1000",
        )
        return
    ahead = value - now
    if ahead > FUTURE_TOLERANCE_S:
        yield Finding(
            WARNING,
            "event_time",
            f"event_time is {ahead / 60:.0f} minutes in the future: the daemon clamps it to "
            "the send time, so TikTok records the wrong time; check the clock and that the "
            "time is UTC Unix seconds",
        )
    age = now - value
    if ATTRIBUTION_WINDOW_S < age <= max_age_s:  # older than max_age_s, the builder refuses it
        yield Finding(
            WARNING,
            "event_time",
            f"event_time is {days(age)} days old, outside TikTok's attribution windows (28 "
            "days click-through, 7 view-through): TikTok will not match it to an ad",
        )
