"""One row's own pixel or test code refused stays with its rows: the default pixel keeps flowing.

The worker against the fake over loopback; the decisions alone are in tests/unit/test_holds.py,
the daemon in tests/e2e/test_holds.py.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import aiohttp

from forwarder.fake_tiktok import FakeTikTok
from tests.support.harness import BUILD, OTHER_PIXEL, PIXEL, TOKEN, Harness
from tests.support.rows import insert, purchases, query, statuses

BAD_TEST_CODE = "Invalid value for test_event_code: not a valid test event code."


async def test_fake_refuses_pixels_and_test_codes(fake: FakeTikTok) -> None:
    """The fake answers 40001 for a refused pixel and 40002 for a refused test code."""
    event = {"event": "Purchase", "event_time": 1_760_000_000, "event_id": "e"}
    async with aiohttp.ClientSession() as session:
        answer = await session.post(f"{fake.url}/_fake/refuse", json={"pixels": [OTHER_PIXEL]})
        assert (await answer.json())["pixels"] == [OTHER_PIXEL]
        answer = await session.post(f"{fake.url}/_fake/refuse", json={"test_event_codes": ["T"]})
        assert await answer.json() == {"pixels": [OTHER_PIXEL], "test_event_codes": ["T"]}
        bad = await session.post(f"{fake.url}/_fake/refuse", json={"pixels": "x"})
        assert bad.status == 400
        for top, code in (
            ({"event_source_id": OTHER_PIXEL}, 40001),
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


async def test_worker_holds_a_refused_pixel_and_delivers_the_rest(
    harness: Harness, db_path: Path
) -> None:
    """40001 for a row's own pixel holds that pixel (no attempt); the default pixel flows."""
    harness.fake.refused_pixels.add(OTHER_PIXEL)
    insert(db_path, purchases(0, 10, pixel_code=OTHER_PIXEL) + purchases(10, 40))
    totals = await harness.drain()
    assert totals.paused_reason is None and totals.delivered == 30
    held = query(
        db_path,
        "SELECT DISTINCT status, attempts, last_code, pixel_code "
        "FROM tiktok_outbox WHERE status != 'sent'",
    )
    assert held == [("pending", 0, "40001", OTHER_PIXEL)]
    assert harness.metrics.pixels_held._value.get() == 1
    state = (await harness.store.summary(harness.clock.now)).state["destination"]
    assert state["paused"] is False and list(state["held_pixels"]) == [OTHER_PIXEL]
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
    harness.fake.refused_pixels.add(OTHER_PIXEL)
    insert(db_path, purchases(0, 10, pixel_code=OTHER_PIXEL))
    await harness.drain()  # OTHER_PIXEL is held
    harness.fake.token = "revoked"
    insert(db_path, purchases(10, 30))
    assert (await harness.drain()).paused_reason == "40105"
    harness.fake.token = TOKEN  # the token is fixed; OTHER_PIXEL is still refused
    harness.clock.advance(120)  # every probe and every held row due, OTHER_PIXEL's rows first
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
    insert(db_path, purchases(0, 5, test_event_code="BADTEST") + purchases(5, 25))
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
    insert(db_path, purchases(0, 5))
    totals = await harness.drain(build=dataclasses.replace(BUILD, test_event_code="CONFIGURED"))
    assert totals.paused_reason == "config_40002"
    assert statuses(db_path) == {"pending": 5}
