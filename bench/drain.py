"""Drain benchmark: N events through `forwarder run --once` against a baseline, in one run.

Prints one JSON object. In the same run, against the same sink (its own process on loopback,
its counters reset before every measurement):

- forwarder: `forwarder run --once` with its default settings, its rate counted from the
  worker's start (its ``worker_started`` log line) to the last row's ``sent_at`` (the wall time
  with start-up is reported too). With --before REV, the `forwarder` package of that git revision
  runs the same way in every round: before and after interleaved on the same machine. --after REV
  runs that revision as the forwarder instead of this checkout (to compare two past revisions).
- minimal loop and naive sender (bench/baselines.py): the minimal loop claims, builds nothing
  (its rows hold payloads built beforehand) and marks sent; the naive sender sends one event per
  request, on fewer events (--naive-events).

--rows shop (the default) is a shop's traffic (bench/rows.py, phone region GB); --rows plain the
older, kinder rows (region US). --sink lean (the default) is bench/sink.py, which answers at
almost no cost per event, so the ratio to the minimal loop shows the daemon's own cost; --sink
fake is the fake TikTok, which validates every event. --latency-ms delays every answer;
--concurrency N runs all of them with N requests in flight (FORWARDER_CONCURRENCY; default 4).

Every round copies fresh databases and rotates which contender goes first; the JSON holds the
median, every round's figure and each round's ratio to the minimal loop (the paired comparison
to trust on a busy machine), CPU milliseconds per 1,000 events of each contender and of the
sink serving it, and the events each contender's requests carried.

Usage: python bench/drain.py [--events 100000] [--latency-ms 0] [--rounds 1] [--naive-events 5000]
                             [--concurrency 4] [--rows shop|plain] [--sink lean|fake]
                             [--before REV] [--after REV]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import sink
from baselines import CONCURRENCY, PIXEL, TOKEN, minimal_loop, naive_sender
from build import extract
from rows import plain_rows, shop_rows

from forwarder.destination import Built
from forwarder.events import OutboxRow
from forwarder.store.sqlite import migrate_sync
from forwarder.tiktok import build as payload

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
BENCH = Path(__file__).resolve().parent
REGIONS = {"shop": "GB", "plain": "US"}  # the phone region each kind of row needs


def make_db(path: Path, n: int, kind: str, *, prebuilt: bool = False) -> None:
    """A migrated outbox holding *n* pending rows of *kind* (shop or plain).

    *prebuilt* stores each payload already normalised and hashed, as TikTok wants it, for the
    baselines: they send what the forwarder sends without building it.
    """
    migrate_sync(path)
    options = payload.BuildOptions(
        default_pixel=PIXEL,
        phone_region=REGIONS[kind],
        consent_default="granted",
        max_age_s=1e9,
        test_event_code=None,
    )
    rows = []
    for i, (event_id, event, raw) in enumerate(shop_rows(n) if kind == "shop" else plain_rows(n)):
        body = raw
        if prebuilt:
            row = OutboxRow(i, event_id, event, None, raw, "", "web", "", 0, time.time())
            built = payload.build(row, options, time.time())
            assert isinstance(built, Built)
            fields = {
                k: v for k, v in built.event.items() if k not in ("event", "event_id", "event_time")
            }
            body = orjson.dumps(fields).decode()
        rows.append((event_id, event, body))
    conn = sqlite3.connect(path)
    with conn:
        conn.executemany(
            "INSERT INTO tiktok_outbox (event_id, event, payload) VALUES (?, ?, ?)", rows
        )
    conn.close()


def copy_db(source: Path, target: Path) -> None:
    """A fresh copy of a template outbox (the template is checkpointed: one file)."""
    for suffix in ("", "-wal", "-shm"):
        Path(f"{target}{suffix}").unlink(missing_ok=True)
    shutil.copyfile(source, target)


def start_fake(latency_ms: int) -> tuple[subprocess.Popen[str], str]:
    """Start the fake TikTok in its own process; return it and its URL."""
    command = [sys.executable, "-m", "forwarder.fake_tiktok", "--port", "0", "--token", TOKEN]
    command += ["--latency-ms", str(latency_ms)]
    fake = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    assert fake.stdout is not None
    line = fake.stdout.readline()
    return fake, line.rsplit(" ", 1)[-1].strip()


def fake_control(url: str, path: str, body: dict[str, Any] | None = None) -> Any:
    """Call one of the fake's /_fake/* endpoints (reset, latency, stats)."""
    data = None if body is None else orjson.dumps(body)
    method = "GET" if body is None and path == "stats" else "POST"
    request = urllib.request.Request(f"{url}/_fake/{path}", data=data, method=method)
    with urllib.request.urlopen(request, timeout=30) as response:
        return orjson.loads(response.read())


def cpu_s(pid: int) -> float:
    """User + system CPU seconds a process has used, from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def sent(path: Path) -> int:
    conn = sqlite3.connect(path)
    try:
        query = "SELECT count(*) FROM tiktok_outbox WHERE status = 'sent'"
        return int(conn.execute(query).fetchone()[0])
    finally:
        conn.close()


def last_sent_at(path: Path) -> float:
    conn = sqlite3.connect(path)
    try:
        return float(conn.execute("SELECT max(sent_at) FROM tiktok_outbox").fetchone()[0])
    finally:
        conn.close()


def daemon_env(path: Path, url: str, **extra: str) -> dict[str, str]:
    """A daemon's environment: this outbox, the fake, default delivery settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TIKTOK_", "FORWARDER_"))}
    env.update(
        TIKTOK_ACCESS_TOKEN=TOKEN,
        TIKTOK_PIXEL_CODE=PIXEL,
        TIKTOK_API_URL=url,
        FORWARDER_DATABASE_URL=f"sqlite:///{path}",
        FORWARDER_HTTP_ADDR="127.0.0.1:0",
        FORWARDER_LOG_LEVEL="info",
        FORWARDER_LOG_FORMAT="json",
        FORWARDER_PHONE_REGION="US",
    )
    env.update(extra)
    return env


def start_daemon(path: Path, url: str, log: Path, **extra: str) -> subprocess.Popen[bytes]:
    """`forwarder run` on *path* (default settings), once its worker has started."""
    with log.open("wb") as out:
        daemon = subprocess.Popen(
            [sys.executable, "-m", "forwarder", "run", "--no-migrate"],
            env=daemon_env(path, url, **extra),
            stdout=subprocess.DEVNULL,
            stderr=out,
        )
    deadline = time.monotonic() + 60
    while '"worker_started"' not in log.read_text(errors="replace"):
        if daemon.poll() is not None or time.monotonic() > deadline:
            daemon.kill()
            raise RuntimeError(f"the daemon did not start:\n{log.read_text()[-2000:]}")
        time.sleep(0.05)
    return daemon


def stop_daemon(daemon: subprocess.Popen[bytes]) -> None:
    daemon.terminate()
    try:
        daemon.wait(30)
    except subprocess.TimeoutExpired:
        daemon.kill()
        daemon.wait()


def log_time(lines: str, event: str) -> float:
    """The Unix time of the first JSON log line of *event*."""
    for line in lines.splitlines():
        if f'"{event}"' in line:
            stamp = json.loads(line)["timestamp"]
            return datetime.fromisoformat(stamp).timestamp()
    raise RuntimeError(f"no {event} log line in:\n{lines[-2000:]}")


def start_sink(kind: str, latency_ms: int) -> tuple[subprocess.Popen[str], str]:
    """Start the lean sink or the fake TikTok; return it and its URL."""
    return start_fake(latency_ms) if kind == "fake" else sink.start(latency_ms)


def sink_reset(kind: str, url: str) -> None:
    fake_control(url, "reset", {}) if kind == "fake" else sink.reset(url)


def sink_counts(kind: str, url: str) -> tuple[int, int]:
    """The events the sink accepted and the requests it answered since its last reset."""
    if kind == "fake":
        stats = fake_control(url, "stats")
        return int(stats["accepted"]), int(stats["requests"])
    counts = sink.stats(url)
    return counts["events"], counts["requests"]


def run_forwarder(
    path: Path, url: str, events: int, source: Path | None = None, **extra: str
) -> dict[str, float]:
    """Deliver the whole outbox with `forwarder run --once`; seconds and CPU seconds.

    *source*: a directory holding another revision's `forwarder` package, run instead of this
    one (it is the working directory, which `python -m` puts first on sys.path).
    """
    env = daemon_env(path, url, **extra)
    if source is not None:
        env["PYTHONPATH"] = str(source)
    children = os.times()
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-m", "forwarder", "run", "--once", "--no-migrate"],
        env=env,
        cwd=source,
        stderr=subprocess.PIPE,
        text=True,
    )
    _, stderr = process.communicate()
    wall_s = time.perf_counter() - started
    after = os.times()
    if process.returncode != 0:
        raise RuntimeError(f"forwarder exited with {process.returncode}:\n{stderr[-2000:]}")
    delivery_s = last_sent_at(path) - log_time(stderr, "worker_started")
    assert sent(path) == events, "forwarder left rows undelivered"
    cpu = (
        after.children_user
        + after.children_system
        - children.children_user
        - children.children_system
    )
    return {"s": delivery_s, "wall_s": wall_s, "cpu_s": cpu}


def per_k(cpu: float, events: int) -> float:
    return round(cpu / events * 1000 * 1000, 1)  # CPU milliseconds per 1,000 events


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--latency-ms", type=int, default=0)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--naive-events", type=int, default=5000, help="0 skips the naive sender")
    parser.add_argument("--concurrency", type=int, default=CONCURRENCY, help="requests in flight")
    parser.add_argument("--rows", choices=("shop", "plain"), default="shop")
    parser.add_argument("--sink", choices=("lean", "fake"), default="lean")
    parser.add_argument("--before", help="a git revision whose forwarder to run as well")
    parser.add_argument("--after", help="a git revision to run instead of this checkout")
    return parser.parse_args()


def measure(args: argparse.Namespace, tmp: Path) -> list[dict[str, float]]:
    """Run every round; each round's seconds and CPU seconds per contender."""
    kind, region = args.rows, REGIONS[args.rows]
    sources: dict[str, Path | None] = {"forwarder": None}
    if args.after:
        sources["forwarder"] = extract(args.after, tmp / "after")
    if args.before:
        sources["before"] = extract(args.before, tmp / "before")
    templates = {"forwarder": tmp / "forwarder.src.db", "minimal": tmp / "minimal.src.db"}
    make_db(templates["forwarder"], args.events, kind)
    make_db(templates["minimal"], args.events, kind, prebuilt=True)
    if args.naive_events:
        templates["naive"] = tmp / "naive.src.db"
        make_db(templates["naive"], args.naive_events, kind, prebuilt=True)
    settings = {"FORWARDER_PHONE_REGION": region}
    if args.concurrency != CONCURRENCY:
        settings["FORWARDER_CONCURRENCY"] = str(args.concurrency)
    server, url = start_sink(args.sink, args.latency_ms)
    rounds: list[dict[str, float]] = []
    try:
        for index in range(args.rounds):
            result: dict[str, float] = {}

            def daemon(name: str, result: dict[str, float] = result) -> None:
                db = tmp / f"{name}.db"
                copy_db(templates["forwarder"], db)
                sink_reset(args.sink, url)
                sink_before = cpu_s(server.pid)
                timing = run_forwarder(db, url, args.events, sources[name], **settings)
                result[f"{name}_s"] = timing["s"]
                result[f"{name}_wall_s"] = timing["wall_s"]
                result[f"{name}_cpu_s"] = timing["cpu_s"]
                result[f"sink_cpu_{name}_s"] = cpu_s(server.pid) - sink_before
                accepted, result[f"{name}_requests"] = sink_counts(args.sink, url)
                assert accepted == args.events, (name, accepted)

            def baseline(name: str, result: dict[str, float] = result) -> None:
                db = tmp / f"{name}.db"
                copy_db(templates[name], db)
                sink_reset(args.sink, url)
                sink_before, own_before = cpu_s(server.pid), time.process_time()
                loop = minimal_loop if name == "minimal" else naive_sender
                result[f"{name}_s"] = asyncio.run(loop(db, url, args.concurrency))
                result[f"{name}_cpu_s"] = time.process_time() - own_before
                result[f"sink_cpu_{name}_s"] = cpu_s(server.pid) - sink_before
                events = args.events if name == "minimal" else args.naive_events
                assert sent(db) == events, f"the {name} baseline left rows undelivered"
                _, result[f"{name}_requests"] = sink_counts(args.sink, url)

            steps = [*sources, "minimal"]
            steps = steps[index % len(steps) :] + steps[: index % len(steps)]
            for name in steps:
                (daemon if name in sources else baseline)(name)
            if args.naive_events:
                baseline("naive")
            rounds.append(result)
    finally:
        server.terminate()
        server.wait(10)
    return rounds


def costs(rounds: list[dict[str, float]], names: list[str], events: int) -> dict[str, Any]:
    """CPU milliseconds per 1,000 events and events per request of each contender (medians)."""

    def median(key: str) -> float:
        return statistics.median(r[key] for r in rounds)

    cpu = {name: per_k(median(f"{name}_cpu_s"), events) for name in names}
    for name in names:
        cpu[f"sink_serving_{name}"] = per_k(median(f"sink_cpu_{name}_s"), events)
    # What each request carried: the daemon's byte cap splits what the minimal loop sends whole.
    carried = {name: round(events / median(f"{name}_requests")) for name in names}
    return {"cpu_ms_per_1k": cpu, "events_per_request": carried}


def main() -> None:
    args = arguments()
    with tempfile.TemporaryDirectory() as tmp:
        rounds = measure(args, Path(tmp))
    names = ["forwarder", *(["before"] if args.before else []), "minimal"]
    out: dict[str, Any] = {"benchmark": "drain", "date": time.strftime("%Y-%m-%d")}

    def median(key: str) -> float:
        return statistics.median(r[key] for r in rounds)

    def rate(key: str, events: int) -> list[float]:
        return [round(events / r[key]) for r in rounds]

    out |= {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}",
        "command": " ".join(["python", *sys.argv]),
        "events": args.events,
        "rows": args.rows,
        "phone_region": REGIONS[args.rows],
        "sink": args.sink,
        "latency_ms": args.latency_ms,
        "concurrency": args.concurrency,
        "rounds": args.rounds,
    }
    for name in names:
        label = "minimal_loop" if name == "minimal" else name
        runs = rate(f"{name}_s", args.events)
        out[f"{label}_events_per_s"] = statistics.median(runs)
        out[f"{label}_runs"] = runs
    for name in names[:-1]:
        ratios = [round(r["minimal_s"] / r[f"{name}_s"], 3) for r in rounds]
        prefix = "" if name == "forwarder" else "before_"
        out[f"{prefix}ratio_to_minimal"] = statistics.median(ratios)
        out[f"{prefix}ratio_runs"] = ratios
    out["forwarder_wall_events_per_s"] = statistics.median(rate("forwarder_wall_s", args.events))
    out |= costs(rounds, names, args.events)
    if args.before:
        out["before"] = args.before
    if args.after:
        out["after"] = args.after
    if args.naive_events:
        out["cpu_ms_per_1k"]["naive_sender"] = per_k(median("naive_cpu_s"), args.naive_events)
        out["cpu_ms_per_1k"]["sink_serving_naive"] = per_k(
            median("sink_cpu_naive_s"), args.naive_events
        )
        naive_rate = rate("naive_s", args.naive_events)
        out["naive_events"] = args.naive_events
        out["naive_events_per_s"] = statistics.median(naive_rate)
        out["naive_runs"] = naive_rate
        out["ratio_to_naive"] = round(out["forwarder_events_per_s"] / out["naive_events_per_s"], 1)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
