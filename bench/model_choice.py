"""Model choice: the typed fields of one event checked by pydantic models, or by schema's tables.

Prints one JSON object. Both check the fields the builder checks on a realistic event (value,
currency, content_type, each content's content_id, price and quantity, page.url, user.ip) with
the same fixes (forwarder.tiktok.checks' functions, run by pydantic as "before" validators), on the
payloads of `bench/build.py`'s 2,000 rows, parsed once beforehand:

- pydantic: ``Payload.model_validate`` of the parsed payload (strict types, custom properties
  allowed), then ``model_dump(exclude_none=True)``, as the builder would need a dict to send;
  and the validation alone;
- tables: ``schema.typed`` on properties and page, and ``normalize_ip`` on the user's ip, as
  ``forwarder.tiktok.build`` runs them.

Each figure is the best of --repeat passes, in microseconds per event.

Usage: python bench/model_choice.py [--repeat 7]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from collections.abc import Callable
from typing import Annotated, Any

import orjson
from build import rows
from pydantic import BaseModel, BeforeValidator, ConfigDict, StrictFloat, StrictInt, StrictStr

from forwarder.tiktok import checks, normalise, schema


def _fix(check: Callable[[object, str], object], name: str) -> BeforeValidator:
    return BeforeValidator(lambda value: check(value, name))


Number = Annotated[StrictInt | StrictFloat, _fix(checks.check_number, "value")]
Integer = Annotated[StrictInt, _fix(checks.check_integer, "quantity")]
Id = Annotated[StrictStr, _fix(checks.check_id, "content_id")]
Currency = Annotated[StrictStr, _fix(checks.check_currency, "currency")]
ContentType = Annotated[StrictStr, _fix(checks.check_content_type, "content_type")]


def _ip(value: object) -> object:
    return normalise.normalize_ip(value) if isinstance(value, str) else value


class Content(BaseModel):
    """One item of properties.contents."""

    model_config = ConfigDict(extra="allow")
    content_id: Id | None = None
    price: Number | None = None
    quantity: Integer | None = None
    content_name: StrictStr | None = None


class Properties(BaseModel):
    """properties, custom keys allowed."""

    model_config = ConfigDict(extra="allow")
    value: Number | None = None
    currency: Currency | None = None
    content_type: ContentType | None = None
    contents: list[Content] | None = None


class Page(BaseModel):
    """page."""

    model_config = ConfigDict(extra="allow")
    url: StrictStr | None = None
    referrer: StrictStr | None = None


class User(BaseModel):
    """user: the identifiers pass as they are (the builder hashes them), ip is checked."""

    model_config = ConfigDict(extra="allow")
    ip: Annotated[StrictStr | None, BeforeValidator(_ip)] = None


class Payload(BaseModel):
    """The payload column."""

    model_config = ConfigDict(extra="forbid")
    user: User | None = None
    properties: Properties | None = None
    page: Page | None = None


def tables(payload: dict[str, Any]) -> None:
    """What the builder runs for the same fields."""
    schema.typed(payload["properties"], schema.PROPERTY_RULES, "payload.properties")
    schema.typed(payload["page"], schema.PAGE_RULES, "payload.page")
    normalise.normalize_ip(payload["user"]["ip"])


def best_us(
    work: Callable[[dict[str, Any]], object], payloads: list[dict[str, Any]], n: int
) -> float:
    """The best of *n* passes of *work* over *payloads*, in microseconds per payload."""
    best = float("inf")
    for _ in range(n):
        started = time.perf_counter()
        for payload in payloads:
            work(payload)
        best = min(best, time.perf_counter() - started)
    return round(best / len(payloads) * 1e6, 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    payloads = [orjson.loads(row.payload) for row in rows()]
    contenders: dict[str, Callable[[dict[str, Any]], object]] = {
        "pydantic_validate_and_dump": lambda p: Payload.model_validate(p).model_dump(
            exclude_none=True
        ),
        "pydantic_validate": Payload.model_validate,
        "tables": tables,
    }
    for work in contenders.values():  # warm-up, and both must accept every payload
        best_us(work, payloads, 1)
    result: dict[str, Any] = {
        "benchmark": "model_choice",
        "command": "python bench/model_choice.py",
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "python": platform.python_version(),
        "payloads": len(payloads),
    }
    for name, work in contenders.items():
        result[f"{name}_us_per_event"] = best_us(work, payloads, args.repeat)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
