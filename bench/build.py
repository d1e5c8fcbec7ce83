"""Build cost: microseconds of the event builder per event, optionally against a revision.

Prints one JSON object. Three cases, built as the daemon builds them:

- shop: 20,000 rows of a shop's traffic (bench/rows.py: returning visitors, identifiers as shops
  write them, a fifth of the phones national) with phone region GB, as FORWARDER_PHONE_REGION=GB;
- shop_no_region: the same rows without a region (the national numbers are then dropped);
- plain: the older rows (bench/rows.py ``realistic``, 1,000) and the tests' web Purchase
  (`tests/support/rows.py` `purchase`, 1,000), with region US.

With --before REV, the `forwarder` package of that git revision is extracted and its builder
(`forwarder/tiktok/build.py`, or `forwarder/payload.py` before the move) imported as modules of
their own, then timed in the same process, interleaved with the current one (which goes first
alternates per round), so that both see the same machine; the JSON then holds both figures,
their ratio per round and its median, and the ratio of the two best rounds. Each figure is the
best of --repeat passes over the rows, per round, in CPU time of this process (the other
engineers' processes on the machine then count less than in wall time); every pass starts with
the current builder's identifier cache empty, so a pass pays for its first sight of every
visitor. Also reported: the cache's hit rate over one pass of the shop's rows, and the memory it
holds when full (tracemalloc, after building 60,000 rows of 20,000 visitors).

Usage: python bench/build.py [--rounds 7] [--repeat 5] [--before 1ea9032] [--cases shop,plain]
"""

from __future__ import annotations

import argparse
import gc
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
import tracemalloc
from pathlib import Path
from types import ModuleType
from typing import Any

import orjson
from rows import REGION, realistic, shop_rows

from forwarder.events import OutboxRow
from forwarder.tiktok import build as builder
from forwarder.tiktok import normalise

ROOT = Path(__file__).resolve().parent.parent
NOW = time.time()
ROWS_PER_KIND = 1000
SHOP_ROWS = 20_000


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


def as_rows(made: list[tuple[str, str, str]]) -> list[OutboxRow]:
    """(event_id, event, payload) tuples as the store hands them to the builder."""
    return [
        OutboxRow(i, event_id, event, int(NOW) - 60, body, "", "web", "", 0, NOW - 30)
        for i, (event_id, event, body) in enumerate(made)
    ]


def plain_rows() -> list[OutboxRow]:
    """The older rows: 1,000 of drain's ``realistic`` and 1,000 of the tests' Purchase."""
    rng = random.Random(42)
    made = [realistic(i, rng) for i in range(ROWS_PER_KIND)]
    made += [helpers_purchase(i) for i in range(ROWS_PER_KIND)]
    return as_rows(made)


def cases() -> dict[str, tuple[list[OutboxRow], str | None]]:
    """Each case's rows and phone region."""
    shop = as_rows(shop_rows(SHOP_ROWS))
    return {"shop": (shop, REGION), "shop_no_region": (shop, None), "plain": (plain_rows(), "US")}


def extract(revision: str, into: Path) -> Path:
    """Extract the `forwarder` package of git *revision* into *into*; return *into*."""
    archive = subprocess.run(
        ["git", "archive", "--format=tar", revision, "forwarder"],
        cwd=ROOT,
        check=True,
        capture_output=True,
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return into


def load_revision(revision: str, into: Path) -> ModuleType:
    """The builder of *revision*, imported from its own `forwarder` package extracted *into*."""
    extract(revision, into)
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


def forget() -> None:
    """Empty the current builder's identifier cache, if it has one."""
    cache = getattr(normalise, "HASH_CACHE", None)
    if cache is not None:
        cache.clear()


def build_options(module: Any, region: str | None) -> Any:
    """The daemon's settings for these rows, as *module*'s BuildOptions."""
    return module.BuildOptions(
        default_pixel="D34FV3JC77U1PDQ72P1G",
        phone_region=region,
        consent_default="granted",
        max_age_s=7 * 86400.0,
        test_event_code=None,
    )


def per_event_us(
    module: Any, batch: list[OutboxRow], region: str | None, repeat: int, reset: Any
) -> float:
    """The best of *repeat* passes over *batch*, in microseconds per row."""
    options = build_options(module, region)
    build, built_type = module.build, module.Built
    best = float("inf")
    for _ in range(repeat):
        reset()
        started = time.process_time()
        for row in batch:
            build(row, options, NOW)
        best = min(best, time.process_time() - started)
    assert all(isinstance(build(row, options, NOW), built_type) for row in batch)
    return best / len(batch) * 1e6


def cache_figures(batch: list[OutboxRow], region: str | None) -> dict[str, Any]:
    """The identifier cache: its hit rate over *batch*, and its traced bytes when full."""
    cache = normalise.HASH_CACHE
    cache.clear()
    options = build_options(builder, region)
    for row in batch:
        builder.build(row, options, NOW)
    info = cache.hashed.cache_info()
    many = as_rows(shop_rows(60_000, seed=5, visitors=20_000))
    # A first pass leaves in each non-ASCII payload the UTF-8 copy orjson asks for, which lives
    # as long as the row: only the second pass's growth is the cache's.
    per_event_us(builder, many, region, 1, lambda: None)
    cache.clear()
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    per_event_us(builder, many, region, 1, lambda: None)
    gc.collect()
    used = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    full = len(cache)
    cache.clear()
    return {
        "hit_rate": round(info.hits / (info.hits + info.misses), 3),
        "entries_after_one_pass": info.currsize,
        "max_entries": cache.max_entries,
        "full_entries": full,
        "full_traced_bytes": used,
        "bytes_per_entry": round(used / full),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--before", help="a git revision whose builder to time as well")
    parser.add_argument("--cases", default="shop,shop_no_region,plain")
    args = parser.parse_args()
    every = cases()
    chosen = {name: every[name] for name in args.cases.split(",")}
    contenders: dict[str, tuple[Any, Any]] = {"after": (builder, forget)}
    if args.before:
        scratch = tempfile.TemporaryDirectory()  # removed at exit, once nothing needs its files
        contenders["before"] = (load_revision(args.before, Path(scratch.name)), lambda: None)
    figures = {case: {name: [] for name in contenders} for case in chosen}
    for _ in (1, 2):  # warm-up: caches, branch predictors, the phone-number metadata
        for module, reset in contenders.values():
            for batch, region in chosen.values():
                per_event_us(module, batch, region, 1, reset)
    for round_ in range(args.rounds):
        order = list(contenders)
        if round_ % 2:
            order.reverse()
        for case, (batch, region) in chosen.items():
            for name in order:
                module, reset = contenders[name]
                us = per_event_us(module, batch, region, args.repeat, reset)
                figures[case][name].append(round(us, 3))
    result: dict[str, Any] = {
        "benchmark": "build",
        "date": time.strftime("%Y-%m-%d"),
        "command": " ".join(["python", "bench/build.py", *sys.argv[1:]]),
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "python": platform.python_version(),
    }
    if args.before:
        result["before"] = args.before
    for case, (batch, region) in chosen.items():
        after = figures[case]["after"]
        found: dict[str, Any] = {
            "rows": len(batch),
            "phone_region": region,
            "after_us_per_event": statistics.median(after),
            "after_runs": after,
        }
        if args.before:
            before = figures[case]["before"]
            ratios = [a / b for a, b in zip(after, before, strict=True)]
            found.update(
                before_us_per_event=statistics.median(before),
                before_runs=before,
                ratio_runs=[round(r, 3) for r in ratios],
                ratio=round(statistics.median(ratios), 3),
                ratio_of_best=round(min(after) / min(before), 3),
            )
        result[case] = found
    if "shop" in chosen:
        result["cache"] = cache_figures(*chosen["shop"])
    print(json.dumps(result))


if __name__ == "__main__":
    main()
