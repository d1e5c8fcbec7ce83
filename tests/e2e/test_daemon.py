"""End to end: the `forwarder` command as a process, rows inserted with the sqlite3 CLI."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
from pathlib import Path

import aiohttp
import orjson
import pytest

from forwarder.fake_tiktok import FakeTikTok, Scripted
from tests.support.daemon import (
    FORWARDER,
    daemon_env,
    finish,
    forwarder,
    free_port,
    insert_rows,
    migrated,
    readyz,
)
from tests.support.harness import TOKEN
from tests.support.rows import purchase, query, statuses
from tests.support.waiting import wait_until


@pytest.fixture
async def setup(db_path: Path, fake: FakeTikTok) -> dict[str, str]:
    """A migrated outbox and the environment of a daemon pointed at the fake."""
    env = daemon_env(db_path, fake)
    await migrated(db_path, env)
    return env


def no_secrets(text: str) -> None:
    """Assert the daemon's output holds neither the token nor a raw identifier."""
    assert TOKEN not in text
    assert "buyer1@example.com" not in text.lower()
    assert "555-0001" not in text


async def test_happy_path(db_path: Path, fake: FakeTikTok, setup: dict[str, str]) -> None:
    """run --once delivers every row inserted by sqlite3, then exits 0 with JSON logs."""
    insert_rows(db_path, [purchase(i) for i in range(1200)])
    code, out, err = await finish(await forwarder(setup, "run", "--once"))
    assert code == 0, err
    assert statuses(db_path) == {"sent": 1200}
    ids = fake.accepted_ids()
    assert len(ids) == len(set(ids)) == 1200
    lines = [orjson.loads(line) for line in err.splitlines() if line.startswith("{")]
    assert any(line["event"] == "worker_stopped" and line["delivered"] == 1200 for line in lines)
    assert all(line["service"] == "forwarder" for line in lines)
    no_secrets(out + err)


async def test_missing_token_is_one_clear_line(db_path: Path, fake: FakeTikTok) -> None:
    """With no token the daemon stops at once, exit 2, naming the setting and .env."""
    env = daemon_env(db_path, fake)
    del env["TIKTOK_ACCESS_TOKEN"]
    code, _, err = await finish(await forwarder(env, "run"))
    assert code == 2
    assert err.strip().count("\n") == 0
    assert "TIKTOK_ACCESS_TOKEN" in err and ".env" in err


async def test_bad_setting_is_one_clear_line(db_path: Path, fake: FakeTikTok) -> None:
    """A bad value stops start-up with one line naming the setting, exit 2."""
    env = daemon_env(db_path, fake, FORWARDER_CONCURRENCY="lots")
    code, _, err = await finish(await forwarder(env, "run"))
    assert code == 2
    assert err.startswith("forwarder: FORWARDER_CONCURRENCY:")
    assert err.strip().count("\n") == 0


async def test_rate_limit_storm(db_path: Path, fake: FakeTikTok, setup: dict[str, str]) -> None:
    """Twenty 40100 answers in a row delay delivery but lose nothing and dead-letter nothing."""
    insert_rows(db_path, [purchase(i) for i in range(300)])
    fake.script(
        Scripted(code=40100, message="Too many requests. Please retry in some time.", times=20)
    )
    daemon = await forwarder(setup, "run")
    try:
        await wait_until(lambda: statuses(db_path) == {"sent": 300}, 60, "all sent")
    finally:
        daemon.send_signal(signal.SIGTERM)
        code, _, err = await finish(daemon)
    assert code == 0, err
    assert fake.answers[40100] == 20
    assert query(db_path, "SELECT max(attempts) FROM tiktok_outbox") == [(1,)]
    assert '"tiktok_throttled"' in err


async def test_revoked_token_pauses_then_recovers(
    db_path: Path, fake: FakeTikTok, setup: dict[str, str]
) -> None:
    """40105 pauses delivery (status says so); fixing the token resumes it without a restart."""
    fake.token = "something-else"
    insert_rows(db_path, [purchase(i) for i in range(100)])
    daemon = await forwarder(setup, "run")
    try:
        await wait_until(lambda: fake.answers[40105] >= 2, 30, "probes answered 40105")
        code, out, err = await finish(await forwarder(setup, "status", "--json"))
        status = orjson.loads(out)
        assert status["destination"]["paused"] is True
        assert status["destination"]["reason"] == "40105"
        assert status["counts"]["pending"] == 100 and status["counts"]["dead"] == 0
        fake.token = TOKEN
        await wait_until(lambda: statuses(db_path) == {"sent": 100}, 30, "all sent")
    finally:
        daemon.send_signal(signal.SIGTERM)
        code, _, err = await finish(daemon)
    assert code == 0
    assert '"destination_resumed"' in err
    assert query(db_path, "SELECT max(attempts) FROM tiktok_outbox") == [(1,)]
    no_secrets(err)


async def test_poison_among_500(db_path: Path, fake: FakeTikTok, setup: dict[str, str]) -> None:
    """One event TikTok rejects, with no index in the message, dies alone; 499 are delivered."""
    fake.poison.add("order-250")
    fake.poison_names_index = False
    insert_rows(db_path, [purchase(i) for i in range(500)])
    code, _, err = await finish(await forwarder(setup, "run", "--once"))
    assert code == 0, err
    assert statuses(db_path) == {"sent": 499, "dead": 1}
    assert query(db_path, "SELECT event_id, last_code FROM tiktok_outbox WHERE status='dead'") == [
        ("order-250", "40002")
    ]
    assert len(set(fake.accepted_ids())) == len(fake.accepted_ids()) == 499


async def test_server_errors_html_and_timeouts(
    db_path: Path, fake: FakeTikTok, setup: dict[str, str]
) -> None:
    """5xx, HTML bodies, garbage, drops and timeouts are retried until everything arrives once."""
    fake.script(
        Scripted(http_status=500, body=b""),
        Scripted(http_status=502, body=b"<html><body>Bad Gateway</body></html>"),
        Scripted(code=50002, message="Error processing request on TikTok side."),
        Scripted(delay_s=2.0),
        Scripted(body=b'{"code": 0, "message": "O'),
        Scripted(drop=True),
        Scripted(http_status=503, body=b"", retry_after="0"),
    )
    insert_rows(db_path, [purchase(i) for i in range(40)])
    daemon = await forwarder({**setup, "FORWARDER_BATCH_MAX_EVENTS": "10"}, "run")
    try:
        await wait_until(lambda: statuses(db_path) == {"sent": 40}, 60, "all sent")
    finally:
        daemon.send_signal(signal.SIGTERM)
        code, _, err = await finish(daemon)
    assert code == 0
    assert len(fake.accepted_ids()) >= 40
    assert {i[2] for i in fake.accepted_ids()} == {f"order-{i}" for i in range(40)}
    for expected in (
        "http_500",
        "http_502",
        "50002",
        "timeout",
        "bad_body",
        "connection",
        "http_503",
    ):
        assert f'"{expected}"' in err, expected


async def test_kill_9_mid_flight_then_restart(
    db_path: Path, fake: FakeTikTok, setup: dict[str, str]
) -> None:
    """A daemon killed with SIGKILL mid-request loses nothing: a restart delivers every event."""
    fake.latency_s = 0.5
    insert_rows(db_path, [purchase(i) for i in range(3000)])
    env = {**setup, "FORWARDER_BATCH_MAX_EVENTS": "200"}
    first = await forwarder(env, "run")
    await wait_until(lambda: fake.requests >= 1, 30, "a request in flight")
    first.kill()
    await first.wait()
    assert statuses(db_path).get("inflight", 0) > 0
    fake.latency_s = 0.0
    second = await forwarder(env, "run")
    try:
        await wait_until(lambda: statuses(db_path) == {"sent": 3000}, 60, "all sent")
    finally:
        second.send_signal(signal.SIGTERM)
        code, _, err = await finish(second)
    assert code == 0
    assert {i[2] for i in fake.accepted_ids()} == {f"order-{i}" for i in range(3000)}
    assert '"leases_rescued"' in err


async def test_sigterm_mid_flight(db_path: Path, fake: FakeTikTok, setup: dict[str, str]) -> None:
    """SIGTERM during slow requests exits 0 with nothing inflight and nothing lost."""
    fake.latency_s = 0.5
    insert_rows(db_path, [purchase(i) for i in range(3000)])
    daemon = await forwarder({**setup, "FORWARDER_BATCH_MAX_EVENTS": "200"}, "run")
    await wait_until(lambda: fake.requests >= 1, 30, "a request in flight")
    daemon.send_signal(signal.SIGTERM)
    code, _, err = await finish(daemon)
    assert code == 0, err
    counts = statuses(db_path)
    assert "inflight" not in counts
    assert counts.get("sent", 0) + counts.get("pending", 0) == 3000
    assert counts.get("sent", 0) == len(fake.accepted_ids())
    assert '"worker_stopped"' in err


async def test_bad_rows_die_and_the_daemon_keeps_running(
    db_path: Path, fake: FakeTikTok, setup: dict[str, str]
) -> None:
    """Malformed rows end dead with reasons while the running daemon delivers later good rows."""
    daemon = await forwarder(setup, "run")
    try:
        insert_rows(
            db_path,
            [
                {"event_id": "b1", "event": "Purchase", "payload": "{not json"},
                {
                    "event_id": "b2",
                    "event": "Purchase",
                    "payload": '{"properties": {"contents": [{"content_id": [7]}]}}',
                },
                {"event_id": "b3", "event": "Purchase", "event_source": "fax"},
                {"event_id": "b4", "event": "Purchase", "event_time": "yesterday"},
            ],
        )
        await wait_until(lambda: statuses(db_path) == {"dead": 4}, 30, "bad rows dead")
        insert_rows(db_path, [purchase(i) for i in range(10)])
        await wait_until(lambda: statuses(db_path) == {"dead": 4, "sent": 10}, 30, "good rows sent")
        assert daemon.returncode is None
    finally:
        daemon.send_signal(signal.SIGTERM)
        code, _, _ = await finish(daemon)
    assert code == 0
    reasons = dict(
        query(db_path, "SELECT event_id, last_error FROM tiktok_outbox WHERE status='dead'")
    )
    assert "JSON" in reasons["b1"]
    assert "content_id" in reasons["b2"]
    assert "event_source" in reasons["b3"]
    assert "event_time" in reasons["b4"]


async def test_enqueue_and_status(db_path: Path, fake: FakeTikTok, setup: dict[str, str]) -> None:
    """enqueue validates like the daemon, prints the row id, and status shows the counts."""
    good = orjson.dumps(
        {"event_id": "e-1", "event": "Lead", "payload": {"user": {"email": "a@b.co"}}}
    )
    process = await asyncio.create_subprocess_exec(
        *FORWARDER,
        "enqueue",
        env=setup,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate(good)
    assert process.returncode == 0, err
    row_id = int(out.decode().strip())
    bad = orjson.dumps(
        {"event_id": "e-2", "event": "Lead", "payload": {"properties": {"value": "x"}}}
    )
    process = await asyncio.create_subprocess_exec(
        *FORWARDER,
        "enqueue",
        env=setup,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate(bad)
    assert process.returncode == 4
    assert b"properties.value" in err
    assert query(db_path, "SELECT id, event_id FROM tiktok_outbox") == [(row_id, "e-1")]
    code, out, _ = await finish(await forwarder(setup, "status"))
    assert code == 0
    assert "pending 1" in out and "delivering" in out


async def test_application_inserts_while_the_daemon_drains(
    db_path: Path, fake: FakeTikTok, setup: dict[str, str]
) -> None:
    """An application's single-row transactions never fail while the daemon drains a backlog."""
    insert_rows(db_path, [purchase(i) for i in range(20_000)])
    daemon = await forwarder(setup, "run")
    failures: list[str] = []

    def application() -> None:
        conn = sqlite3.connect(db_path, timeout=5)  # the busy timeout the README asks for
        try:
            for i in range(20_000, 21_000):
                row = purchase(i)
                try:
                    with conn:
                        conn.execute(
                            "INSERT INTO tiktok_outbox (event_id, event, payload) VALUES (?, ?, ?)",
                            (row["event_id"], row["event"], row["payload"]),
                        )
                except sqlite3.Error as error:
                    failures.append(str(error))
        finally:
            conn.close()

    try:
        await asyncio.to_thread(application)
        await wait_until(lambda: statuses(db_path) == {"sent": 21_000}, 90, "all sent")
    finally:
        daemon.send_signal(signal.SIGTERM)
        code, _, _ = await finish(daemon)
    assert failures == []
    assert code == 0


async def paused_gauge(port: int) -> list[str]:
    """The forwarder_destination_paused samples of the daemon's /metrics."""
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}/metrics") as response,
    ):
        text = await response.text()
    return [line for line in text.splitlines() if line.startswith("forwarder_destination_paused{")]


@pytest.mark.parametrize(
    ("code", "reason", "label"),
    [
        (41000, "41000", "41000"),
        (40118, "40118", "40118"),
        (49999, "storm_49999", "storm_unknown"),
    ],
)
async def test_a_code_storm_dead_letters_nothing(
    db_path: Path, fake: FakeTikTok, setup: dict[str, str], code: int, reason: str, label: str
) -> None:
    """TikTok answers every request 41000 (BLOCKED), 40118 (NOT_IN_WHITELIST) or a code nobody
    knows, for twenty answers and more (all 300 events were dead after five before): nothing
    is dead, /readyz is 503 naming the reason meanwhile, and all are sent once it clears."""
    port = free_port()
    env = {**setup, "FORWARDER_HTTP_ADDR": f"127.0.0.1:{port}"}
    insert_rows(db_path, [purchase(i) for i in range(300)])
    fake.script(Scripted(code=code, message="Something is wrong", forever=True))
    daemon = await forwarder(env, "run")
    try:
        await wait_until(lambda: fake.answers[code] >= 20, 60, f"twenty answers of {code}")
        status, body = await readyz(port)
        assert status == 503
        assert body["reason"] == f"destination paused: {reason}: Something is wrong"
        assert f'forwarder_destination_paused{{reason="{label}"}} 1.0' in await paused_gauge(port)
        assert statuses(db_path) == {"pending": 300}
        fake.clear_script()
        await wait_until(lambda: statuses(db_path) == {"sent": 300}, 60, "all sent")
        status, _ = await readyz(port)
        assert status == 200
        assert f'forwarder_destination_paused{{reason="{label}"}} 0.0' in await paused_gauge(port)
    finally:
        daemon.send_signal(signal.SIGTERM)
        exit_code, _, err = await finish(daemon)
    assert exit_code == 0, err
    assert {i[2] for i in fake.accepted_ids()} == {f"order-{i}" for i in range(300)}
    # 49999's two answers before the storm counted an attempt each, the probes none, and the
    # accepted request one more.
    [(most,)] = query(db_path, "SELECT max(attempts) FROM tiktok_outbox")
    assert most <= 3
    assert '"destination_paused"' in err and '"destination_resumed"' in err
