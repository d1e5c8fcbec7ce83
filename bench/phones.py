"""Phone normalisation: forwarder.tiktok.phones against phonenumbers itself.

Prints one JSON object. The numbers are a realistic mix, all normalised with region GB (as with
FORWARDER_PHONE_REGION=GB): "+1 213-373-4253" shapes, "(+1)2133734253" shapes and national
London numbers "020 7946 0958" in the proportions 1/2 : 1/3 : 1/5 (15 : 10 : 6), with random
valid subscriber digits. Each round times, in a rotating order, the reference (phonenumbers'
parse, is_possible_number and format_number) and normalise_phone_strict (the builder's, the same
answers) over the whole mix; the figures are medians over the rounds, in µs per number. Also
reported: how each number was decided (phonenumbers' metadata or phonenumbers.parse).

Usage: python bench/phones.py [--numbers 31000] [--rounds 7]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable

from forwarder.tiktok import phones

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
    """Count how normalise_phone_strict decided each number."""
    seen: Counter[str] = Counter()
    parse = phones._parse

    def counting_parse(raw: str, region: str | None) -> str | None:
        seen["phonenumbers"] += 1
        return parse(raw, region)

    phones._parse = counting_parse
    try:
        for raw in numbers:
            phones.normalise_phone_strict(raw, REGION)
    finally:
        phones._parse = parse
    return {"metadata": len(numbers) - seen["phonenumbers"], "phonenumbers": seen["phonenumbers"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--numbers", type=int, default=31000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--seed", type=int, default=21)
    args = parser.parse_args()

    shapes = mix(args.numbers, args.seed)
    everything = [raw for numbers in shapes.values() for raw in numbers]
    wrong = sum(
        phones.normalise_phone_strict(raw, REGION) != phones._parse(raw, REGION)
        for raw in everything
    )
    contenders: dict[str, Normaliser] = {
        "phonenumbers": phones._parse,
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
        "answers_differing_from_phonenumbers": wrong,
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
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
