"""Crash loop: the daemon killed with SIGKILL again and again during delivery loses nothing,
and each restart returns the rows its predecessor held to pending within seconds.

`make soak` (FORWARDER_SOAK=1) runs the same experiment with ten times the events and five times
the kills. Both print the time from each restart to the last of the dead daemon's rows rescued.
"""

from __future__ import annotations

import asyncio
import collections
import os
import random
import signal
import statistics
import sys
import time
from pathlib import Path

import orjson
import pytest

from forwarder.fake_tiktok import FakeTikTok
from tests.support.daemon import daemon_env, log_lines, migrated, spawn
from tests.support.rows import insert, purchase, query, statuses
from tests.support.waiting import wait_until

SOAK = bool(os.environ.get("FORWARDER_SOAK"))
EVENTS = 200_000 if SOAK else 20_000
KILLS = 100 if SOAK else 20
SEED = 20_261_122
RESCUE_BOUND_S = 10.0  # issue 20: from a restart to the last row of the dead daemon rescued


@pytest.fixture
def fake_options() -> dict[str, object]:
    """The fake TikTok answers after 50 ms, like a real API would."""
    return {"latency_s": 0.05}


def inflight_of(db_path: Path, pid: int) -> int:
    """Rows still leased by the daemon with this pid (lease_owner is host:pid:tag)."""
    [(count,)] = query(
        db_path,
        "SELECT count(*) FROM tiktok_outbox WHERE status = 'inflight' AND lease_owner LIKE ?",
        (f"%:{pid}:%",),
    )
    return int(count)


async def rescued_after_restart(db_path: Path, pid: int) -> float:
    """Seconds from now (a restart) until the daemon with *pid* holds no row any more."""
    started = time.monotonic()
    await wait_until(
        lambda: inflight_of(db_path, pid) == 0,
        RESCUE_BOUND_S,
        f"the rows of daemon {pid} rescued after the restart",
    )
    return time.monotonic() - started


@pytest.mark.timeout(3600 if SOAK else 240)
async def test_kill_9_loop_loses_nothing(db_path: Path, fake: FakeTikTok, tmp_path: Path) -> None:
    """Twenty SIGKILLs at random moments of a 20k drain: nothing lost, duplicates bounded."""
    rng = random.Random(SEED)
    # The default lease (60 s): no rescue here may wait for it.
    env = daemon_env(
        db_path,
        fake,
        FORWARDER_LEASE="60s",
        FORWARDER_REQUEST_TIMEOUT="1s",
        FORWARDER_BATCH_MAX_EVENTS="200",
    )
    await migrated(db_path, env)
    insert(db_path, [purchase(i) for i in range(EVENTS)])
    expected = {f"order-{i}" for i in range(EVENTS)}

    def all_sent() -> bool:
        return statuses(db_path) == {"sent": EVENTS}

    inflight_at_kills: list[int] = []
    rescue_s: list[float] = []  # per restart, until the dead daemon held no row
    logs: list[Path] = []
    killed: int | None = None  # the pid of the daemon killed last
    for kill in range(KILLS):
        log = tmp_path / f"daemon-{kill}.log"
        logs.append(log)
        daemon = spawn(env, log)
        try:
            if killed is not None:
                rescue_s.append(await rescued_after_restart(db_path, killed))
            # Kill after a few requests reached TikTok, plus up to one answer's latency: some
            # kills land before the answer, some between the answer and the "sent" mark.
            base, more = fake.requests, rng.randint(1, 4)
            await wait_until(
                lambda base=base, more=more: fake.requests >= base + more or all_sent(),
                60,
                f"kill {kill}: {more} more request(s)",
            )
            await asyncio.sleep(rng.uniform(0, 0.08))
        finally:
            daemon.send_signal(signal.SIGKILL)
            await asyncio.to_thread(daemon.wait, 10)
        assert daemon.returncode == -signal.SIGKILL, f"daemon {kill} exited {daemon.returncode}"
        inflight_at_kills.append(inflight_of(db_path, daemon.pid))
        killed = daemon.pid
        assert not all_sent(), f"the backlog ran out after {kill + 1} kills: raise EVENTS"

    log = tmp_path / "daemon-last.log"
    logs.append(log)
    last = spawn(env, log)
    try:
        rescue_s.append(await rescued_after_restart(db_path, daemon.pid))
        await wait_until(all_sent, 600 if SOAK else 120, "every row sent after the last restart")
    finally:
        last.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(last.wait, 30)
    assert code == 0, log.read_text()

    accepted = collections.Counter(event_id for _, _, event_id in fake.accepted_ids())
    lost = expected - set(accepted)
    duplicates = sum(count - 1 for count in accepted.values())
    in_flight = sum(inflight_at_kills)
    lines = [line for path in logs for line in log_lines(path)]
    rescues = [line for line in lines if line.get("event") == "leases_rescued"]
    rescued = sum(int(str(line.get("rows", 0))) for line in rescues)
    reasons = collections.Counter(str(line.get("reason")) for line in rescues)
    failures = [line for line in lines if line.get("level") in ("error", "critical")]
    summary = {
        "events": EVENTS,
        "kills": KILLS,
        "lost": len(lost),
        "duplicates": duplicates,
        "inflight_at_kills": in_flight,
        "rescued_logged": rescued,
        "rescue_reasons": dict(reasons),
        "requests": fake.requests,
        "per_kill_inflight": inflight_at_kills,
        "restart_to_last_rescued_s": {
            "max": round(max(rescue_s), 2),
            "median": round(statistics.median(rescue_s), 2),
            "each": [round(seconds, 2) for seconds in rescue_s],
        },
    }
    print("crash loop:", orjson.dumps(summary).decode(), file=sys.stderr)
    assert not lost, f"{len(lost)} events never reached TikTok, e.g. {sorted(lost)[:5]}"
    assert set(accepted) == expected
    assert duplicates <= in_flight, summary
    assert query(db_path, "SELECT count(*) FROM tiktok_outbox WHERE status='inflight'") == [(0,)]
    # Rows a killed daemon held leave inflight only through a rescue, and each rescue is logged
    # (a kill landing between a rescue and its log line may hide one claim's worth).
    assert rescued >= in_flight - max(inflight_at_kills), summary
    # Every restart rescued what its predecessor held before claiming: none waited for a lease.
    assert set(reasons) == {"restart"}, summary
    assert max(rescue_s) <= RESCUE_BOUND_S, summary
    assert not failures, failures[:3]
