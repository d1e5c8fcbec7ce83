"""What TikTok documents, read from the event model's table: the fields of a built event that
break it (type, source, requirement), for property tests of the builder."""

from __future__ import annotations

import re
from typing import Any

from forwarder.tiktok import schema, spec

HEX64 = re.compile(r"[0-9a-f]{64}")


def typed_problems(event: dict[str, Any], source: str) -> list[str]:
    """The fields of a built *event* that break schema's table (type, source, requirement)."""
    problems = [key for key in event if key not in schema.BY_PATH]
    problems += _object_problems(event, "", source)
    for field in schema.FIELDS:
        top, _, key = field.path.partition(".")
        if source in field.required and key and "[" not in key and top in ("app", "lead"):
            value = event.get(top, {}).get(key)
            if not (isinstance(value, str) and value.strip()):
                problems.append(f"{field.path} missing")
    if source == "offline" and event["event"] not in spec.OFFLINE_EVENTS:
        problems.append("event")
    return problems


def _object_problems(obj: dict[str, Any], prefix: str, source: str) -> list[str]:
    problems = []
    for key, value in obj.items():
        path = f"{prefix}{key}"
        field = schema.BY_PATH.get(path)
        if field is None:
            if prefix.startswith("user.") or not prefix:
                problems.append(f"{path} unknown")
            continue  # a custom property, page or app field, sent as given
        if source not in field.sources:
            problems.append(f"{path} sent for {source}")
        if type(value) not in schema.JSON_TYPES[field.type]:
            problems.append(f"{path} {type(value).__name__}")
        elif field.type in schema.JSON_VALUES and value not in schema.JSON_VALUES[field.type]:
            problems.append(f"{path} value")
        elif field.type.startswith("hashed") and not all(
            HEX64.fullmatch(v) for v in (value if isinstance(value, list) else [value])
        ):
            problems.append(f"{path} not hashed")
        elif field.type == "id list" and not all(type(v) is str for v in value):
            problems.append(f"{path} items")
        elif field.type == "list":
            for item in value:
                problems += _object_problems(item, f"{path}[].", source)
        elif field.type == "object":
            problems += _object_problems(value, f"{path}.", source)
    return problems
