"""The lint's errors: every refusal of the builder for one event, as the daemon would store it.

``refusals_of`` builds the event with ``forwarder.tiktok.build``, the daemon's own code; after
each refusal it sets the refused field aside and builds again, so that every refused field is
reported, not only the first. ``error_for`` words a refusal as the lint's error, with what the
field should be (from ``forwarder.tiktok.schema``'s table).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import orjson

from forwarder.destination import TOO_OLD, Built, Refused
from forwarder.events import OutboxRow
from forwarder.tiktok import schema
from forwarder.tiktok.build import BuildOptions, build
from forwarder.tiktok.build_row import COLUMNS, CONSENT_KEYS, DEFAULT_EVENT_SOURCE, PAYLOAD_KEYS
from forwarder.tiktok.checks import AGE, MISSING, SOURCE, UNKNOWN_KEY
from forwarder.tiktok.findings import ERROR, Finding
from forwarder.tiktok.lint_names import suggest
from forwarder.tiktok.spec import CURRENCIES, USER_KEYS, WEB_EVENTS

#: Placeholder pixel for the builder: a missing pixel_code is fine (TIKTOK_PIXEL_CODE is used).
_LINT_PIXEL = "LINT"
#: More refusals than fields in any event: the bound of refusals_of's loop.
_MAX_REFUSALS = 100
#: What a refused column is set to so that the builder can go on to the next field.
_PLACEHOLDERS: dict[str, object] = {
    "event_id": "lint",
    "event": "Purchase",
    "event_source": DEFAULT_EVENT_SOURCE,
    "pixel_code": "",
    "test_event_code": "",
    "event_time": None,
}
#: The objects whose keys are a closed list, for an unknown key the reason could not name.
_ALLOWED = {
    "payload": PAYLOAD_KEYS,
    "payload.user": USER_KEYS,
    "payload.consent": CONSENT_KEYS,
}
_PATH_PART = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def refusals_of(
    document: Mapping[str, Any], *, now: float, phone_region: str | None, max_age_s: float
) -> tuple[list[Refused], Built | None]:
    """Every refusal of the builder for *document*, in order, and what it builds without them.

    After each refusal the refused field is set aside (removed, or a required one given a
    placeholder) and the event built again; the Built is None when the payload itself is unusable.
    """
    columns = {key: value for key, value in document.items() if key in COLUMNS}
    columns["payload"] = _editable(columns.get("payload", "{}"))
    options = _options(phone_region, max_age_s)
    refusals: list[Refused] = []
    for _ in range(_MAX_REFUSALS):
        result = build(outbox_row(columns, now), options, now)
        if isinstance(result, Built):
            return refusals, result
        if any((r.field, r.rule) == (result.field, result.rule) for r in refusals):
            break  # setting the field aside did not help: stop rather than repeat it
        refusals.append(result)
        if not _set_aside(columns, result, now):
            break
    return refusals, None


def _editable(raw: object) -> object:
    """The payload as a fresh object the lint may change, or as given when it is not one."""
    if isinstance(raw, str):
        try:
            parsed = orjson.loads(raw) if raw.strip() else {}
        except orjson.JSONDecodeError:
            return raw
        return parsed if isinstance(parsed, dict) else raw
    if isinstance(raw, dict):
        try:
            copied: object = orjson.loads(orjson.dumps(raw))
        except TypeError:  # orjson.JSONEncodeError; only from a non-JSON Python object
            return raw
        return copied
    return raw


def _set_aside(columns: dict[str, Any], refused: Refused, now: float) -> bool:
    """Change *columns* so that the builder gets past *refused*; False when it cannot."""
    field, rule = refused.field, refused.rule
    if rule == AGE:
        columns["event_time"] = int(now)
        return True
    if field in _PLACEHOLDERS:
        columns[field] = _PLACEHOLDERS[field]
        return True
    body = columns.get("payload")
    if not isinstance(body, dict) or not field.startswith("payload"):
        return False  # the payload itself is unusable: nothing more can be checked
    if rule == UNKNOWN_KEY and field in _ALLOWED:
        # An unknown key not fit to quote: every such key of that object goes.
        target = body if field == "payload" else body.get(field.split(".")[1])
        if isinstance(target, dict):
            for key in [key for key in target if key not in _ALLOWED[field]]:
                del target[key]
            return True
        return False
    parts: list[str | int] = [
        int(index) if index else name for name, index in _PATH_PART.findall(field)
    ][1:]
    return _set_aside_at(body, parts, rule)


def _set_aside_at(body: dict[str, Any], parts: list[str | int], rule: str) -> bool:
    if not parts:
        return False
    node: Any = body
    for part in parts[:-1]:
        child = node.get(part) if isinstance(node, dict) else None
        if child is None and rule == MISSING and isinstance(part, str):
            child = node[part] = {}  # a required field of an absent object
        elif isinstance(node, list) and isinstance(part, int) and part < len(node):
            child = node[part]
        if not isinstance(child, dict | list):
            return False
        node = child
    last = parts[-1]
    if rule == MISSING and isinstance(node, dict):
        node[last] = "lint"
    elif isinstance(node, dict) and last in node:
        del node[last]
    elif isinstance(node, list) and isinstance(last, int) and last < len(node):
        if parts[-2:-1] == ["contents"]:
            node[last] = {}  # an item that is not an object: the others are still checked
        else:
            return _set_aside_at(body, parts[:-1], rule)  # the list holding it goes
    else:
        return False
    return True


def error_for(refused: Refused, document: Mapping[str, Any]) -> Finding:
    """The lint's error for one of the builder's refusals, with the daemon's reason code."""
    field = _lint_field(refused.field)
    reason = refused.reason.removeprefix(f"[{refused.reason_code}] ")
    cost = (
        "the daemon dead-letters it without sending"
        if refused.code == TOO_OLD
        else "enqueue refuses the event and the daemon would dead-letter it"
    )
    hint = _expected(refused)
    name = document.get("event")
    if refused.rule == SOURCE and refused.field == "event" and isinstance(name, str):
        suggestion = suggest(name.strip(), "offline")
        if suggestion is not None:
            hint = f"; did you mean {suggestion}?"
    return Finding(ERROR, field, f"{reason}{hint}; {cost}", refused.reason_code)


#: How the lint words each type of schema's table.
_TYPE_WORDS = {
    "string": "a string",
    "id": "a string (an id)",
    "number": "a number",
    "integer": "a whole number",
    "boolean": "true or false",
    "currency": f"one of the {len(CURRENCIES)} ISO 4217 codes it lists",
    "content_type": '"product" or "product_group"',
    "att_status": "one of the five ATT states",
    "object": "an object",
    "list": "a list of objects",
    "id list": "a list of strings (ids)",
    "hashed list": "a string or a list of strings",
    "hashed": "a string",
}
#: What a required field holds, for the error saying it is missing.
_REQUIRED_HINTS = {
    "app.app_id": "the App Store id (digits) or the Android package name",
    "lead.lead_id": "the TikTok lead id (from Leads Center or /page/lead/task/)",
}


def _expected(refused: Refused) -> str:
    """What schema's table says the refused field should be, for the error's last clause."""
    path = re.sub(r"\[\d+\]", "[]", refused.field.removeprefix("payload."))
    field = schema.BY_PATH.get(path)
    if refused.rule == SOURCE and refused.field == "event":
        return f"; use one of {', '.join(WEB_EVENTS)}"
    if field is None or refused.rule not in ("type", "value", MISSING):
        return ""
    if refused.rule == MISSING and path in _REQUIRED_HINTS:
        return f"; send {_REQUIRED_HINTS[path]}"
    fix = f"; the daemon fixes: {field.fix}" if field.fix else ""
    return f" (TikTok's type: {_TYPE_WORDS[field.type]}{fix})"


def _lint_field(field: str) -> str:
    """A builder field in the lint's naming: TikTok's (``user.ip``), not the outbox's."""
    if field == "payload" or (field.startswith("payload.") and field.count(".") == 1):
        name = field.removeprefix("payload.")
        return name if name in PAYLOAD_KEYS else field
    return field.removeprefix("payload.")


def outbox_row(document: Mapping[str, Any], now: float) -> OutboxRow:
    """The outbox row ``forwarder enqueue`` would insert for *document*."""
    raw = document.get("payload", "{}")
    if not isinstance(raw, str):
        # enqueue writes any other JSON value as its JSON text, which the builder then reads.
        try:
            raw = orjson.dumps(raw).decode()
        except TypeError:  # orjson.JSONEncodeError; only from a non-JSON Python object
            raw = None
    return OutboxRow(
        id=0,
        event_id=document.get("event_id", ""),
        event=document.get("event", ""),
        event_time=document.get("event_time"),
        payload=raw,
        pixel_code=document.get("pixel_code", ""),
        event_source=document.get("event_source", DEFAULT_EVENT_SOURCE),
        test_event_code=document.get("test_event_code", ""),
        attempts=0,
        created_at=now,
        payload_format=document.get("payload_format"),
    )


def _options(phone_region: str | None, max_age_s: float) -> BuildOptions:
    # Consent granted so identifiers are checked as if sent; a missing pixel_code is not a
    # problem of the event (TIKTOK_PIXEL_CODE is used), so the builder gets a placeholder.
    return BuildOptions(
        default_pixel=_LINT_PIXEL,
        phone_region=phone_region or None,
        consent_default="granted",
        max_age_s=max_age_s,
        test_event_code=None,
    )
