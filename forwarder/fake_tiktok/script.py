"""Scripted answers: what the fake answers instead of behaving as TikTok does, given from Python
(``fake.script(Scripted(...))``) or as JSON (``POST /_fake/script``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final


@dataclass
class Scripted:
    """One scripted answer, consumed by the next ``times`` track requests."""

    code: int | None = None  # body code to answer (with message); None = behave normally
    message: str = ""
    http_status: int = 200
    body: bytes | None = None  # raw body instead of the JSON envelope
    delay_s: float = 0.0  # wait before answering (to provoke client timeouts)
    drop: bool = False  # close the connection without answering
    retry_after: str | None = None  # value of the Retry-After header
    location: str | None = None  # a redirect: Location header, with a 3xx http_status
    times: int = 1  # how many requests this answer applies to
    forever: bool = False  # answer every request so, ignoring times, until clear_script()


_SCRIPTED_TYPES: Final[dict[str, tuple[type, ...]]] = {
    "code": (int, type(None)),
    "message": (str,),
    "http_status": (int,),
    "body": (str, type(None)),
    "delay_s": (int, float),
    "drop": (bool,),
    "retry_after": (str, type(None)),
    "location": (str, type(None)),
    "times": (int,),
    "forever": (bool,),
}


def scripted_from_json(item: Any) -> Scripted:
    """Build a Scripted from its JSON form; ``body`` is a string sent UTF-8 encoded."""
    if not isinstance(item, dict):
        raise ValueError("each scripted answer must be an object")
    unknown = set(item) - set(_SCRIPTED_TYPES)
    if unknown:
        raise ValueError(f"unknown Scripted fields: {sorted(unknown)}")
    for key, value in item.items():
        allowed = _SCRIPTED_TYPES[key]
        if not isinstance(value, allowed) or (isinstance(value, bool) and bool not in allowed):
            raise ValueError(f"Scripted.{key} has the wrong type")
    fields = dict(item)
    if isinstance(fields.get("body"), str):
        fields["body"] = fields["body"].encode()
    return Scripted(**fields)
