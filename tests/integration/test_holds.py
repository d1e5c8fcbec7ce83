"""One row's own pixel or test code refused stays with its rows: the default pixel keeps flowing."""

from __future__ import annotations

import dataclasses
import random
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import orjson
import pytest

from forwarder import decide
from forwarder.backoff import BackoffPolicy
from forwarder.fake_tiktok import FakeTikTok
from forwarder.holds import Holds
from forwarder.outcome import ApiResponse, Outcome
from forwarder.store.sqlite import SQLiteStore
from forwarder.tiktok.classify import classify

from .conftest import insert
from .helpers import purchase, query, statuses, wait_until
from .test_db_faults import events, spawn, stop
from .test_e2e import daemon_env, finish, forwarder, migrated
from .test_redirects import readyz
from .test_systemd import free_port
from .test_worker import BUILD, PIXEL, TOKEN, Harness

OTHER = "OTHERPIXEL77"  # a pixel a row names itself, which the token may not operate
PERMISSION = "No permission to operate pixel code: X. You must be an admin or operator."
BAD_TEST_CODE = "Invalid value for test_event_code: not a valid test event code."


def outcome(code: int, message: str) -> Outcome:
    """TikTok's answer with *code* and *message*, as classify() reads it."""
    body = orjson.dumps({"code": code, "message": message, "request_id": "req"})
    return classify(ApiResponse(200, body, None), 0.0)


POLICY = decide.Policy(
    default_source=f" {PIXEL} ",
    default_test_code="CONFIGURED",
    backoff=BackoffPolicy(),
    storm_answers=3,
    unknown_code_max_attempts=5,
    unknown_code_min_delay_s=60.0,
)
HOLD, PAUSE, ROWS = decide.Action.HOLD, decide.Action.PAUSE, decide.Action.REJECT


@pytest.mark.parametrize(
    "answer, pixel, test_code, expected",
    [
        (outcome(40001, PERMISSION), OTHER, None, HOLD),
        (outcome(40001, PERMISSION), PIXEL, None, PAUSE),
        (outcome(40001, PERMISSION), OTHER, "MINE", HOLD),
        (outcome(40007, "Not exist"), OTHER, None, HOLD),
        (outcome(40105, "Access token is incorrect"), OTHER, None, PAUSE),
        (outcome(40104, "Access token is null"), OTHER, None, PAUSE),
        (outcome(40006, "version"), OTHER, None, PAUSE),
        (outcome(40002, BAD_TEST_CODE), PIXEL, "MINE", ROWS),
        (outcome(40002, BAD_TEST_CODE), OTHER, "MINE", ROWS),
        (outcome(40002, BAD_TEST_CODE), PIXEL, "CONFIGURED", PAUSE),
        (outcome(40002, BAD_TEST_CODE), PIXEL, None, PAUSE),
        (outcome(40002, "Invalid value for event_source_id: x"), OTHER, None, ROWS),
        (outcome(40002, "Invalid value for event_source_id: x"), PIXEL, None, PAUSE),
        (outcome(40002, "access_token is invalid"), OTHER, None, PAUSE),
    ],
)
def test_whose_fault_a_refusal_is(
    answer: Outcome, pixel: str, test_code: str | None, expected: decide.Action
) -> None:
    """Only the token, the default pixel and the configured test code concern everything."""
    request = decide.Request(pixel, test_code, (0, 0))
    decision = decide.decide(answer, answer.verdict, request, POLICY, random.Random(1))
    assert decision.action is expected
    if expected is ROWS:
        assert decision.dead == (0, 1) and decision.resend == ()


def test_a_hold_probes_on_a_growing_interval_counted_once_per_probe() -> None:
    """Refusals of requests sent together count once; each refused probe doubles the wait."""
    holds = Holds(initial_s=1.0, max_s=4.0)
    assert holds.hold(OTHER, 100.0, "40001", "no").probe_at == 101.0
    assert holds.hold(OTHER, 100.1, "40001", "no").probe_at == 101.0  # sent before the hold
    assert not holds.take_probe(OTHER, 100.5)
    assert holds.take_probe(OTHER, 101.0)
    assert not holds.take_probe(OTHER, 101.1)  # one probe at a time
    assert holds.held[OTHER].probe_at == 103.0
    assert holds.hold(OTHER, 101.2, "40001", "no").probe_at == 103.2
    for now in (104.0, 110.0, 120.0):
        assert holds.take_probe(OTHER, now)
        hold = holds.hold(OTHER, now, "40001", "no")
    assert hold.probe_at - 120.0 == 4.0  # capped
    holds.probe_now(121.0)
    assert holds.take_probe(OTHER, 121.0)
    assert holds.release(OTHER) is not None and holds.release(OTHER) is None
    assert not holds.take_probe(OTHER, 200.0)


async def test_fake_refuses_pixels_and_test_codes(fake: FakeTikTok) -> None:
    """The fake answers 40001 for a refused pixel and 40002 for a refused test code."""
    event = {"event": "Purchase", "event_time": 1_760_000_000, "event_id": "e"}
    async with aiohttp.ClientSession() as session:
        answer = await session.post(f"{fake.url}/_fake/refuse", json={"pixels": [OTHER]})
        assert (await answer.json())["pixels"] == [OTHER]
        answer = await session.post(f"{fake.url}/_fake/refuse", json={"test_event_codes": ["T"]})
        assert await answer.json() == {"pixels": [OTHER], "test_event_codes": ["T"]}
        bad = await session.post(f"{fake.url}/_fake/refuse", json={"pixels": "x"})
        assert bad.status == 400
        for top, code in (
            ({"event_source_id": OTHER}, 40001),
            ({"event_source_id": PIXEL, "test_event_code": "T"}, 40002),
            ({"event_source_id": PIXEL}, 0),
        ):
            payload = {"event_source": "web", "data": [event], **top}
            headers = {"Access-Token": TOKEN}
            async with session.post(
                f"{fake.url}/open_api/v1.3/event/track/", json=payload, headers=headers
            ) as answer:
                assert (await answer.json())["code"] == code
    fake.reset()
    assert fake.refused_pixels == fake.refused_test_codes == set()


@pytest.fixture
async def fake() -> AsyncIterator[FakeTikTok]:
    """The fake TikTok on a free loopback port."""
    async with FakeTikTok(token=TOKEN) as server:
        yield server


@pytest.fixture
async def harness(store: SQLiteStore, fake: FakeTikTok) -> AsyncIterator[Harness]:
    """A worker factory on a fresh outbox and a fresh fake."""
    async with aiohttp.ClientSession() as session:
        yield Harness(store, fake, session)


def rows(first: int, last: int, **columns: object) -> list[dict[str, object]]:
    """Purchase rows *first*..*last*-1 with extra outbox columns."""
    return [{**purchase(i), **columns} for i in range(first, last)]


async def test_worker_holds_a_refused_pixel_and_delivers_the_rest(
    harness: Harness, db_path: Path
) -> None:
    """40001 for a row's own pixel holds that pixel (no attempt); the default pixel flows."""
    harness.fake.refused_pixels.add(OTHER)
    insert(db_path, rows(0, 10, pixel_code=OTHER) + rows(10, 40))
    totals = await harness.drain()
    assert totals.paused_reason is None and totals.delivered == 30
    held = query(
        db_path,
        "SELECT DISTINCT status, attempts, last_code, pixel_code "
        "FROM tiktok_outbox WHERE status != 'sent'",
    )
    assert held == [("pending", 0, "40001", OTHER)]
    assert harness.metrics.pixels_held._value.get() == 1
    state = (await harness.store.summary(harness.clock.now)).state["destination"]
    assert state["paused"] is False and list(state["held_pixels"]) == [OTHER]
    harness.clock.advance(5)
    refusals = harness.fake.answers[40001]
    await harness.drain()
    assert harness.fake.answers[40001] == refusals + 1  # one event probed the held pixel
    assert statuses(db_path) == {"sent": 30, "pending": 10}
    harness.fake.refused_pixels.clear()
    for _ in range(3):  # the probe, then the rest it held back
        harness.clock.advance(10)
        await harness.drain()
    assert statuses(db_path) == {"sent": 40}
    assert harness.metrics.pixels_held._value.get() == 0
    state = (await harness.store.summary(harness.clock.now)).state["destination"]
    assert state["held_pixels"] == {}


async def test_paused_destination_probes_past_a_held_pixel(harness: Harness, db_path: Path) -> None:
    """A paused destination's probe does not keep choosing a held pixel's rows."""
    harness.fake.refused_pixels.add(OTHER)
    insert(db_path, rows(0, 10, pixel_code=OTHER))
    await harness.drain()  # OTHER is held
    harness.fake.token = "revoked"
    insert(db_path, rows(10, 30))
    assert (await harness.drain()).paused_reason == "40105"
    harness.fake.token = TOKEN  # the token is fixed; OTHER is still refused
    harness.clock.advance(120)  # every probe and every held row due, OTHER's rows first
    refusals = harness.fake.answers[40001]
    totals = await harness.drain()
    assert totals.paused_reason is None
    assert statuses(db_path) == {"sent": 20, "pending": 10}
    assert harness.fake.answers[40001] - refusals <= 1


async def test_worker_kills_rows_whose_own_test_code_is_refused(
    harness: Harness, db_path: Path
) -> None:
    """40002 naming test_event_code for a row's own code: those rows dead, the rest flow."""
    harness.fake.refused_test_codes.add("BADTEST")
    insert(db_path, rows(0, 5, test_event_code="BADTEST") + rows(5, 25))
    totals = await harness.drain()
    assert totals.paused_reason is None
    assert statuses(db_path) == {"sent": 20, "dead": 5}
    reasons = {
        r for (r,) in query(db_path, "SELECT last_error FROM tiktok_outbox WHERE status = 'dead'")
    }
    assert reasons == {f"TikTok rejected the event (code 40002): {BAD_TEST_CODE}"}


async def test_configured_test_code_refused_pauses(harness: Harness, db_path: Path) -> None:
    """The same refusal of TIKTOK_TEST_EVENT_CODE is a configuration fault: pause, kill none."""
    harness.fake.refused_test_codes.add("CONFIGURED")
    insert(db_path, rows(0, 5))
    totals = await harness.drain(build=dataclasses.replace(BUILD, test_event_code="CONFIGURED"))
    assert totals.paused_reason == "config_40002"
    assert statuses(db_path) == {"pending": 5}


async def test_daemon_keeps_delivering_past_a_refused_pixel_and_test_code(
    db_path: Path, fake: FakeTikTok, tmp_path: Path
) -> None:
    """End to end: a refused pixel is held, a refused test code dead; /readyz stays 200."""
    port = free_port()
    env = daemon_env(
        db_path, fake, TIKTOK_ACCESS_TOKEN=TOKEN, FORWARDER_HTTP_ADDR=f"127.0.0.1:{port}"
    )
    await migrated(db_path, env)
    fake.refused_pixels.add(OTHER)
    fake.refused_test_codes.add("BADTEST")
    insert(db_path, rows(0, 20, pixel_code=OTHER) + rows(20, 25, test_event_code="BADTEST"))
    insert(db_path, rows(25, 55))
    log = tmp_path / "daemon.log"
    daemon = spawn(env, log)
    try:

        def settled() -> bool:
            return statuses(db_path) == {"sent": 30, "dead": 5, "pending": 20}

        await wait_until(settled, 30, "default rows sent, bad test codes dead")
        insert(db_path, rows(55, 65))  # good rows inserted afterwards go out too
        await wait_until(lambda: statuses(db_path).get("sent") == 40, 30, "later rows sent")
        ready, body = await readyz(port)
        assert (ready, body) == (200, {"ready": True, "held_pixels": [OTHER]})
        pending = query(
            db_path,
            "SELECT DISTINCT attempts, last_code FROM tiktok_outbox WHERE status = 'pending'",
        )
        assert pending == [(0, "40001")]
        code, out, err = await finish(await forwarder(env, "status"))
        assert code == 0, err
        assert f"held pixel      {OTHER} (40001" in out and "destination     delivering" in out
        code, out, _ = await finish(await forwarder(env, "status", "--json"))
        assert list(orjson.loads(out)["destination"]["held_pixels"]) == [OTHER]
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{port}/metrics") as answer,
        ):
            assert "forwarder_pixels_held 1.0" in await answer.text()
        fake.refused_pixels.clear()  # the token is granted the pixel
        await wait_until(lambda: statuses(db_path) == {"sent": 60, "dead": 5}, 30, "all sent")
        assert (await readyz(port))[1]["held_pixels"] == []
    finally:
        code = await stop(daemon)
    assert code == 0, log.read_text()[-2000:]
    assert not events(log, "destination_paused")
    assert events(log, "pixel_held") and events(log, "pixel_released")
    dead = query(
        db_path,
        "SELECT DISTINCT last_code, test_event_code FROM tiktok_outbox WHERE status = 'dead'",
    )
    assert dead == [("40002", "BADTEST")]
    ids = fake.accepted_ids()
    assert len(ids) == len(set(ids)) == 60
