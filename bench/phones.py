"""Phone normalisation: forwarder.tiktok.phones against the current normalize_phone.

Prints one JSON object. The numbers are a realistic mix, all normalised with region GB (as with
FORWARDER_PHONE_REGION=GB): "+1 213-373-4253" shapes, "(+1)2133734253" shapes and national
London numbers "020 7946 0958" in the proportions 1/2 : 1/3 : 1/5 (15 : 10 : 6), with random
valid subscriber digits. Each round times, in a rotating order, the reference
(normalise.normalize_phone), forwarder.tiktok.phones.normalise_phone (the same answers, shortcuts
included) and normalise_phone_strict (phonenumbers' answers, no shortcuts) over the whole mix;
the figures are medians over the rounds, in µs per number. Also reported: how each number was
decided (the reference's shortcuts, phonenumbers' metadata, phonenumbers.parse), and
PhoneHashCache's cost per hit and per miss and its traced memory when full.

Usage: python bench/phones.py [--numbers 31000] [--rounds 7] [--cache-entries 10000]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import random
import statistics
import sys
import time
import tracemalloc
from collections import Counter
from collections.abc import Callable

from forwarder.tiktok import phones
from forwarder.tiktok.normalise import normalize_phone

REGION = "GB"
SHAPES = ("intl_dashes", "intl_bracketed", "national_gb")
WEIGHTS = (15, 10, 6)  # 1/2, 1/3 and 1/5, scaled to whole numbers
AREA_CODES = ("213", "310", "312", "415", "646", "702", "818", "917")

Normaliser = Callable[[str, str | None], str | None]


def us_digits(rng: random.Random) -> tuple[str, str, str]:
    """A North American number: area code, exchange (2-9xx), line."""
    exchange = f"{rng.randint(2, 9)}{rng.randrange(100):02d}"
    return rng.choice(AREA_CODES), exchange, f"{rng.randrange(10000):04d}"


def number(shape: str, rng: random.Random) -> str:
    """One number written in *shape*."""
    if shape == "intl_dashes":
        area, exchange, line = us_digits(rng)
        return f"+1 {area}-{exchange}-{line}"
    if shape == "intl_bracketed":
        area, exchange, line = us_digits(rng)
        return f"(+1){area}{exchange}{line}"
    block = rng.choice(("7", "3"))  # London 020 7xxx and 020 3xxx numbers
    return f"020 {block}{rng.randrange(1000):03d} {rng.randrange(10000):04d}"


def mix(count: int, seed: int) -> dict[str, list[str]]:
    """*count* numbers, split between the shapes by WEIGHTS."""
    rng = random.Random(seed)
    total = sum(WEIGHTS)
    return {
        shape: [number(shape, rng) for _ in range(count * weight // total)]
        for shape, weight in zip(SHAPES, WEIGHTS, strict=True)
    }


def timed(normalise: Normaliser, numbers: list[str]) -> float:
    """Seconds to normalise every number once."""
    started = time.perf_counter()
    for raw in numbers:
        normalise(raw, REGION)
    return time.perf_counter() - started


def paths(numbers: list[str]) -> dict[str, int]:
    """Count how normalise_phone decided each number."""
    seen: Counter[str] = Counter()
    strict, parse = phones.normalise_phone_strict, phones._parse

    def counting_strict(raw: str, region: str | None) -> str | None:
        seen["metadata"] += 1
        return strict(raw, region)

    def counting_parse(raw: str, region: str | None) -> str | None:
        seen["phonenumbers"] += 1
        return parse(raw, region)

    phones.normalise_phone_strict, phones._parse = counting_strict, counting_parse
    try:
        for raw in numbers:
            phones.normalise_phone(raw, REGION)
    finally:
        phones.normalise_phone_strict, phones._parse = strict, parse
    metadata = seen["metadata"] - seen["phonenumbers"]
    shortcut = len(numbers) - seen["metadata"]
    return {"shortcut": shortcut, "metadata": metadata, "phonenumbers": seen["phonenumbers"]}


def cache_figures(entries: int, numbers: list[str]) -> dict[str, float]:
    """PhoneHashCache: µs per miss and per hit on *numbers*, traced bytes when full."""
    cache = phones.PhoneHashCache(len(numbers))
    miss = timed(cache, numbers)
    hit = min(timed(cache, numbers) for _ in range(5))
    full = phones.PhoneHashCache(entries)
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for i in range(entries + entries // 10):  # distinct numbers, a tenth of them evicted
        full(f"020 {7000 + i // 10000} {i % 10000:04d}", REGION)
    gc.collect()
    used = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    return {
        "cache_miss_us": round(miss / len(numbers) * 1e6, 2),
        "cache_hit_us": round(hit / len(numbers) * 1e6, 3),
        "cache_entries": len(full),
        "cache_traced_bytes": used,
        "cache_bytes_per_entry": round(used / len(full)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--numbers", type=int, default=31000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--cache-entries", type=int, default=phones.DEFAULT_CACHE_ENTRIES)
    parser.add_argument("--seed", type=int, default=21)
    args = parser.parse_args()

    shapes = mix(args.numbers, args.seed)
    everything = [raw for numbers in shapes.values() for raw in numbers]
    wrong = sum(
        phones.normalise_phone(raw, REGION) != normalize_phone(raw, REGION) for raw in everything
    )
    contenders: dict[str, Normaliser] = {
        "reference": normalize_phone,
        "normalise_phone": phones.normalise_phone,
        "normalise_phone_strict": phones.normalise_phone_strict,
    }
    for normalise in contenders.values():  # warm: metadata loaded, regexes compiled
        timed(normalise, everything[:200])
    per_round: dict[str, list[float]] = {name: [] for name in contenders}
    per_shape: dict[str, dict[str, list[float]]] = {
        name: {shape: [] for shape in SHAPES} for name in contenders
    }
    names = list(contenders)
    for round_index in range(args.rounds):
        order = names[round_index % len(names) :] + names[: round_index % len(names)]
        for name in order:
            total = 0.0
            for shape, numbers in shapes.items():
                seconds = timed(contenders[name], numbers)
                per_shape[name][shape].append(seconds / len(numbers) * 1e6)
                total += seconds
            per_round[name].append(total / len(everything) * 1e6)

    decided = paths(everything)
    result = {
        "benchmark": "phones",
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}",
        "command": " ".join(["python", *sys.argv]),
        "region": REGION,
        "numbers": {shape: len(numbers) for shape, numbers in shapes.items()},
        "rounds": args.rounds,
        "answers_differing_from_reference": wrong,
        "us_per_number": {name: round(statistics.median(r), 2) for name, r in per_round.items()},
        "us_per_number_rounds": {
            name: [round(value, 2) for value in r] for name, r in per_round.items()
        },
        "us_per_number_by_shape": {
            name: {shape: round(statistics.median(v), 2) for shape, v in by_shape.items()}
            for name, by_shape in per_shape.items()
        },
        "decided_by": decided,
        "fast_path_hit_rate": round(1 - decided["phonenumbers"] / len(everything), 4),
        **cache_figures(args.cache_entries, everything),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
