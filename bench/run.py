"""`make bench`: every SQLite benchmark, one JSON line each, then a table against the goals.

Runs, each as its own process: the event builder (bench/build.py), the drain of a shop's rows
(bench/rows.py, phone region GB) against the lean sink (bench/sink.py) answering at once and
after 100 ms, and of the older rows at once (with the minimal-loop and naive-sender baselines in
the same run), the steady state, the contention benchmark (bench/contention.py, when it
exists), and the footprint (idle CPU, memory with a large backlog). The steady state runs with
the fake TikTok answering at once and after 100 ms. The defaults take about five minutes on
2 cores; these variables scale them:

  BENCH_EVENTS=100000         drain backlog            BENCH_ROUNDS=3       drain rounds
  BENCH_NAIVE_EVENTS=5000     naive sender at 0 ms     BENCH_STEADY_SECONDS=20
  BENCH_STEADY_RATE=1000      inserts per second       BENCH_IDLE_SECONDS=30
  BENCH_MEMORY_ROWS=1000000   pending rows for memory  BENCH_CONTENTION=1   (0 skips it)
  BENCH_BEFORE=<rev>          also run the builder and the drains as of that git revision,
                              interleaved with the current code
"""

from __future__ import annotations

import json
import operator
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent


def env_int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


def run(script: str, *args: object) -> dict[str, Any]:
    """Run bench/<script> with *args*; echo and return the JSON object it prints."""
    path = os.path.relpath(BENCH / script)  # as the JSON names the command
    command = [sys.executable, path, *map(str, args)]
    started = time.monotonic()
    done = subprocess.run(command, stdout=subprocess.PIPE, text=True, check=True)
    result: dict[str, Any] = json.loads(done.stdout)
    result.setdefault("command", " ".join(["python", path, *map(str, args)]))
    result["bench_seconds"] = round(time.monotonic() - started, 1)
    print(json.dumps(result), flush=True)
    return result


def main() -> None:
    events = env_int("BENCH_EVENTS", 100_000)
    rounds = env_int("BENCH_ROUNDS", 3)
    results: dict[str, dict[str, Any]] = {}
    before = os.environ.get("BENCH_BEFORE")
    also = ["--before", before] if before else []
    results["build"] = run("build.py", *also)
    drain = ["drain.py", "--events", events, "--rounds", rounds, *also]
    results["drain0"] = run(*drain, "--naive-events", env_int("BENCH_NAIVE_EVENTS", 5000))
    results["drain0_plain"] = run(*drain, "--rows", "plain", "--naive-events", 0)
    # At 100 ms a naive sender manages 4 events per 100 ms: a few hundred events measure it.
    results["drain100"] = run(*drain, "--latency-ms", 100, "--naive-events", 200)
    for latency in (0, 100):
        results[f"steady{latency}"] = run(
            "steady.py",
            "--rate",
            env_int("BENCH_STEADY_RATE", 1000),
            "--seconds",
            env_int("BENCH_STEADY_SECONDS", 20),
            "--latency-ms",
            latency,
        )
    if (BENCH / "contention.py").exists() and env_int("BENCH_CONTENTION", 1):
        results["contention"] = run("contention.py")
    results["footprint"] = run(
        "footprint.py",
        "--idle-seconds",
        env_int("BENCH_IDLE_SECONDS", 30),
        "--rows",
        env_int("BENCH_MEMORY_ROWS", 1_000_000),
    )
    table(results)


def table(results: dict[str, dict[str, Any]]) -> None:
    """Print the figures against the issue's goals (2 cores)."""
    at_least, at_most = operator.ge, operator.le
    rows: list[tuple[str, Any, str, bool | None]] = []

    def goal(
        label: str, value: Any, text: str, test: Callable[[float, float], bool], bound: float
    ) -> None:
        rows.append((label, value, text, None if value is None else test(value, bound)))

    def info(label: str, value: Any) -> None:
        rows.append((label, value, "", None))

    build = results["build"]
    for case in ("shop", "shop_no_region", "plain"):
        figures = build[case]
        label = f"build: µs per event, {case} rows"
        if case == "shop":
            goal(f"{label} (region GB)", figures["after_us_per_event"], "<= 12", at_most, 12)
        else:
            info(label, figures["after_us_per_event"])
        if "ratio" in figures:
            info(f"build, {case}: ratio to {build['before']} (median)", figures["ratio"])
    d0, d100 = results["drain0"], results["drain100"]
    goal(
        "drain, 0 ms: forwarder events/s",
        d0["forwarder_events_per_s"],
        ">= 40,000",
        at_least,
        40_000,
    )
    info("drain, 0 ms: minimal loop events/s", d0["minimal_loop_events_per_s"])
    goal("drain, 0 ms: forwarder / minimal loop", d0["ratio_to_minimal"], ">= 0.75", at_least, 0.75)
    info("drain, 0 ms: ratio per round", d0["ratio_runs"])
    info("drain, 0 ms: naive sender events/s", d0.get("naive_events_per_s"))
    goal("drain, 0 ms: forwarder / naive sender", d0.get("ratio_to_naive"), ">= 30", at_least, 30)
    info("drain, 0 ms: CPU ms per 1,000 events", d0["cpu_ms_per_1k"])
    if "before_ratio_to_minimal" in d0:
        info(f"drain, 0 ms: {d0['before']} / minimal loop", d0["before_ratio_to_minimal"])
    plain = results["drain0_plain"]
    info("drain, 0 ms, older rows: forwarder / minimal loop", plain["ratio_to_minimal"])
    info("drain, 0 ms, older rows: ratio per round", plain["ratio_runs"])
    goal(
        "drain, 100 ms: forwarder events/s",
        d100["forwarder_events_per_s"],
        ">= 30,000",
        at_least,
        30_000,
    )
    info("drain, 100 ms: minimal loop events/s", d100["minimal_loop_events_per_s"])
    goal(
        "drain, 100 ms: forwarder / minimal loop",
        d100["ratio_to_minimal"],
        ">= 0.9",
        at_least,
        0.9,
    )
    goal(
        "drain, 100 ms: forwarder / naive sender", d100.get("ratio_to_naive"), ">= 30", at_least, 30
    )
    for latency in (0, 100):
        steady = results[f"steady{latency}"]
        rate = f"steady {steady['rate_per_s']:,}/s, {latency} ms"
        goal(f"{rate}: insert-to-accepted p50 ms", steady["p50_ms"], "<= 250", at_most, 250)
        goal(f"{rate}: insert-to-accepted p99 ms", steady["p99_ms"], "<= 1,000", at_most, 1000)
    if "contention" in results:
        drain = results["contention"].get("insert_latency_ms_drain", {})
        goal("contention: app insert p99 ms", drain.get("p99"), "<= 10", at_most, 10)
        goal("contention: app insert max ms", drain.get("max"), "<= 250", at_most, 250)
    footprint = results["footprint"]
    goal("idle: CPU % of one core", footprint.get("idle_cpu_percent"), "<= 1", at_most, 1)
    goal(
        f"memory: peak RSS MiB, {footprint.get('rows', 0):,} pending",
        footprint.get("peak_rss_mib"),
        "<= 150 MB",
        at_most,
        150_000_000 / 2**20,
    )
    width = max(len(label) for label, *_ in rows)
    print()
    print(f"{'figure':{width}}  {'measured':>24}  {'goal':>10}  met")
    for label, value, text, met in rows:
        shown = f"{value:,}" if isinstance(value, int | float) else str(value)
        mark = "" if met is None else ("yes" if met else "NO")
        print(f"{label:{width}}  {shown:>24}  {text:>10}  {mark}")


if __name__ == "__main__":
    main()
