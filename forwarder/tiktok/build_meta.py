"""A row that names its payload's format (``payload_format``, migration 0004), read as the row of
TikTok's shape it means: NULL, blank or ``tiktok`` as it is; ``meta_capi`` converted by
``forwarder.tiktok.meta_capi`` first. ``forwarder.tiktok.build`` builds the result as any row."""

from __future__ import annotations

import orjson

from forwarder.events import OutboxRow
from forwarder.tiktok.build_row import optional_text, parse_json, required_text
from forwarder.tiktok.checks import TYPE, VALUE, Invalid
from forwarder.tiktok.meta_capi import FORMATS, META_CAPI, META_ONLY, TIKTOK, Converted, convert

#: The values of ``forwarder_converted_fields_dropped_total``'s label: Meta's own user fields
#: (which TikTok has no field for), ``ph`` (a phone Meta hashed without its "+"), ``other``.
DROPPED_FIELDS = (*sorted(META_ONLY), "ph", "other")
_DROPPED_USER_FIELDS = frozenset(DROPPED_FIELDS) - {"other"}


def is_tiktok(payload_format: object) -> bool:
    """Whether a row's *payload_format* is TikTok's own shape: NULL, blank or ``tiktok``."""
    return payload_format is None or (
        type(payload_format) is str and payload_format.strip() in ("", TIKTOK)
    )


def converted_row(row: OutboxRow) -> tuple[OutboxRow, Converted]:
    """The row of TikTok's shape a converted *row* means, and what the conversion mapped and
    dropped; raise Invalid (a NotConvertible names the Meta field)."""
    given = row.payload_format
    if not isinstance(given, str) or given.strip() != META_CAPI:
        rule = VALUE if isinstance(given, str) else TYPE
        formats = ", ".join(FORMATS)
        raise Invalid(rule, "payload_format", f"payload_format must be NULL or one of {formats}")
    event = required_text(row.event, "event")
    source = optional_text(row.event_source, "event_source")
    converted = convert(event, source, parse_json(row.payload))
    payload = orjson.dumps(converted.payload).decode()
    tiktok = row._replace(
        event=converted.event,
        event_source=converted.event_source,
        payload=payload,
        payload_format=None,
    )
    return tiktok, converted


def dropped_labels(converted: Converted) -> tuple[str, ...]:
    """The metric labels of the fields *converted* was built without, each once."""
    labels: dict[str, None] = {}
    for name, _ in converted.dropped:
        key = name.removeprefix("user_data.")
        labels[key if key in _DROPPED_USER_FIELDS and key != name else "other"] = None
    return tuple(labels)
