"""Build cost: microseconds of the event builder per realistic event, optionally against a revision.

Prints one JSON object. The rows are the drain benchmark's (`bench/drain.py` `realistic`: raw
identifiers, phones in three formats, one to three contents) and the tests' web Purchase
(`tests/support/rows.py` `purchase`), 1,000 of each, built as the daemon builds them. With
--before REV, the `forwarder` package of that git revision is extracted and its builder
(`forwarder/tiktok/build.py`, or `forwarder/payload.py` before the move) imported as modules of
their own, then timed in the same process, interleaved with the current one (which goes first
alternates per round), so that both see the same machine; the JSON then holds both figures,
their ratio per round and its median, and the ratio of the two best rounds. Each figure is the
best of --repeat passes over the rows, per round.

Usage: python bench/build.py [--rounds 7] [--repeat 5] [--before f646d2c]
"""

from __future__ import annotations

import argparse
import importlib
import io
import json
import platform
import random
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import orjson
from drain import realistic

from forwarder.events import OutboxRow
from forwarder.tiktok import build as builder

ROOT = Path(__file__).resolve().parent.parent
NOW = time.time()
ROWS_PER_KIND = 1000


def helpers_purchase(i: int) -> tuple[str, str, str]:
    """The tests' realistic web Purchase (tests/support/rows.py `purchase`)."""
    body = {
        "user": {
            "email": f" Buyer{i}@Example.com ",
            "phone": f"+1 (213) 555-{i % 10000:04d}",
            "external_id": f"user-{i}",
            "ip": "203.0.113.7",
            "user_agent": "Mozilla/5.0",
            "ttclid": f"E.C.P.{i}",
        },
        "properties": {
            "currency": "USD",
            "value": 10.5,
            "contents": [{"content_id": f"sku-{i % 7}", "quantity": 1, "price": 10.5}],
        },
        "page": {"url": f"https://shop.example/thanks?o={i}"},
    }
    return f"order-{i}", "Purchase", orjson.dumps(body).decode()


def rows() -> list[OutboxRow]:
    """2,000 rows as the store hands them to the builder."""
    rng = random.Random(42)
    made = [realistic(i, rng) for i in range(ROWS_PER_KIND)]
    made += [helpers_purchase(i) for i in range(ROWS_PER_KIND)]
    return [
        OutboxRow(i, event_id, event, int(NOW) - 60, body, "", "web", "", 0, NOW - 30)
        for i, (event_id, event, body) in enumerate(made)
    ]


def load_revision(revision: str, into: Path) -> ModuleType:
    """The builder of *revision*, imported from its own `forwarder` package extracted *into*."""
    archive = subprocess.run(
        ["git", "archive", "--format=tar", revision, "forwarder"],
        cwd=ROOT,
        check=True,
        capture_output=True,
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    path = "forwarder.tiktok.build" if (into / "forwarder/tiktok/build.py").exists() else None
    # The current package steps aside while the old one is imported (its modules import each
    # other as `forwarder.…`), then comes back; the old modules keep their own references.
    current = {name: module for name, module in sys.modules.items() if _ours(name)}
    for name in current:
        del sys.modules[name]
    sys.path.insert(0, str(into))
    try:
        module = importlib.import_module(path or "forwarder.payload")
    finally:
        sys.path.remove(str(into))
        for name in [name for name in sys.modules if _ours(name)]:
            del sys.modules[name]
        sys.modules.update(current)
    return module


def _ours(name: str) -> bool:
    return name == "forwarder" or name.startswith("forwarder.")


def per_event_us(module: Any, batch: list[OutboxRow], repeat: int) -> float:
    """The best of *repeat* passes over *batch*, in microseconds per row."""
    options = module.BuildOptions(
        default_pixel="D34FV3JC77U1PDQ72P1G",
        phone_region="US",
        consent_default="granted",
        max_age_s=7 * 86400.0,
        test_event_code=None,
    )
    build, built_type = module.build, module.Built
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        for row in batch:
            build(row, options, NOW)
        best = min(best, time.perf_counter() - started)
    assert all(isinstance(build(row, options, NOW), built_type) for row in batch)
    return best / len(batch) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--before", help="a git revision whose builder to time as well")
    args = parser.parse_args()
    batch = rows()
    contenders: dict[str, Any] = {"after": builder}
    if args.before:
        scratch = tempfile.TemporaryDirectory()  # removed at exit, once nothing needs its files
        contenders["before"] = load_revision(args.before, Path(scratch.name))
    figures: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in (1, 2):  # warm-up: caches, branch predictors, the phone-number metadata
        for module in contenders.values():
            per_event_us(module, batch, 1)
    for round_ in range(args.rounds):
        order = list(contenders)
        if round_ % 2:
            order.reverse()
        for name in order:
            figures[name].append(round(per_event_us(contenders[name], batch, args.repeat), 3))
    result: dict[str, Any] = {
        "benchmark": "build",
        "command": " ".join(["python", "bench/build.py", *sys.argv[1:]]),
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "python": platform.python_version(),
        "rows": len(batch),
        "after_us_per_event": statistics.median(figures["after"]),
        "after_runs": figures["after"],
    }
    if args.before:
        ratios = [a / b for a, b in zip(figures["after"], figures["before"], strict=True)]
        result.update(
            before=args.before,
            before_us_per_event=statistics.median(figures["before"]),
            before_runs=figures["before"],
            ratio_runs=[round(r, 3) for r in ratios],
            ratio=round(statistics.median(ratios), 3),
            ratio_of_best=round(min(figures["after"]) / min(figures["before"]), 3),
        )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
