"""Fault matrix: every answer TikTok (or a proxy, or the network) can give, and what follows.

The worker runs in drain mode against the fake TikTok over real loopback HTTP on a real SQLite
file, with a hand-moved clock. Each case checks the first outcome (delivered, retried, throttled,
paused or dead) and then that nothing is lost: every row ends sent, dead with a code and a reason,
or pending with the code that holds it back; never inflight, never missing.
"""

from __future__ import annotations

import email.utils
import os
from pathlib import Path
from typing import Any

import pytest

from forwarder.fake_tiktok import Scripted
from forwarder.outcome import Verdict
from forwarder.tiktok.classify import CODE_RANGES, CODE_VERDICTS, code_verdict
from tests.support.harness import TOKEN, Harness
from tests.support.rows import insert, purchase, query, statuses

ROWS = 3
STORM = 5000 if os.environ.get("FORWARDER_SOAK") else 200  # events in the mixed-failure storm
LATER_S = 700.0  # past every backoff, throttle pause and probe interval the Harness configures


def rows(db_path: Path) -> list[tuple[Any, ...]]:
    """(event_id, status, attempts, last_code, last_error, next_attempt_at) of every row."""
    return query(
        db_path,
        "SELECT event_id, status, attempts, last_code, last_error, next_attempt_at"
        " FROM tiktok_outbox ORDER BY id",
    )


def none_lost(db_path: Path, count: int = ROWS, *, untried: bool = False) -> None:
    """Every row is sent, dead with a code and reason, or pending with a code; none inflight.

    With *untried*, pending rows no request carried yet (no code, no attempt) are allowed too.
    """
    found = rows(db_path)
    assert len(found) == count, f"{count - len(found)} rows missing"
    for event_id, status, attempts, code, reason, _ in found:
        if status == "sent":
            continue
        assert status in ("dead", "pending"), (event_id, status)
        if untried and status == "pending" and code is None and attempts == 0:
            continue
        assert code, (event_id, status, "no code on record")
        if status == "dead":
            assert reason, (event_id, "dead without a reason")


async def settle_all(harness: Harness, db_path: Path, **overrides: Any) -> None:
    """Move past every delay and drain until every row is sent or dead (a bounded number)."""
    for _ in range(10):
        state = statuses(db_path)
        if set(state) <= {"sent", "dead"}:
            return
        harness.clock.advance(LATER_S)
        await harness.drain(**overrides)
    raise AssertionError(f"rows still waiting after 10 rounds: {statuses(db_path)}")


def every_event_reached_tiktok(harness: Harness, db_path: Path) -> None:
    """Every sent row's event_id was accepted by the fake at least once."""
    sent = {e for (e,) in query(db_path, "SELECT event_id FROM tiktok_outbox WHERE status='sent'")}
    assert sent <= {event_id for *_, event_id in harness.fake.accepted_ids()}


def _case_id(code: int) -> str:
    return f"{code}-{code_verdict(code)}"


# --- Every body code of the classification table ----------------------------------------------

TABLE = sorted(CODE_VERDICTS)
SPLIT = {40061, 40011}  # too many events or ids in one request: split, nothing dead
RANGES = sorted({c for low, high, _ in CODE_RANGES for c in (low, (low + high) // 2, high)})


@pytest.mark.parametrize("code", TABLE + RANGES, ids=_case_id)
async def test_every_code(harness: Harness, db_path: Path, code: int) -> None:
    """Each TikTok body code of the table (and each range's ends) has its documented outcome."""
    verdict = code_verdict(code)
    insert(db_path, [purchase(i) for i in range(ROWS)])
    # A message naming data[1], so locatable rejections dead-letter that event alone.
    harness.fake.script(Scripted(code=code, message=f"data.1.event_id: answered {code}"))
    totals = await harness.drain()
    first = rows(db_path)
    assert harness.fake.requests >= 1
    if verdict is Verdict.ACCEPTED:
        assert {(s, a, c) for _, s, a, c, *_ in first} == {("sent", 1, str(code))}
        return
    if verdict in (Verdict.RETRY, Verdict.AMBIGUOUS):
        # Backed off per row (an attempt counted), due again within the first backoff step.
        assert {(s, a, c) for _, s, a, c, *_ in first} == {("pending", 1, str(code))}
        assert all(harness.clock.now < due <= harness.clock.now + 1.0 for *_, due in first)
    elif verdict is Verdict.THROTTLE:
        # The destination slows down; the rows wait, no attempt counted.
        assert {(s, a, c) for _, s, a, c, *_ in first} == {("pending", 0, str(code))}
        assert harness.pacer.throttled_until > harness.clock.now
        assert all(due >= harness.pacer.throttled_until for *_, due in first)
    elif verdict is Verdict.PAUSE:
        # Credentials or configuration: paused, nothing dead, no attempt counted.
        assert totals.paused_reason == str(code)
        assert {(s, a, c) for _, s, a, c, *_ in first} == {("pending", 0, str(code))}
    else:
        assert verdict is Verdict.REJECT
        dead = [r for r in first if r[1] == "dead"]
        if code in SPLIT:  # a batch-size answer names no event: the batch is split and resent
            assert dead == []
            assert harness.fake.requests == 3
        else:
            assert [(e, c) for e, _, _, c, *_ in dead] == [("order-1", str(code))]
            assert f"code {code}" in dead[0][4]
    none_lost(db_path)
    await settle_all(harness, db_path)
    none_lost(db_path)
    every_event_reached_tiktok(harness, db_path)
    expected = {"sent": ROWS - 1, "dead": 1} if verdict is Verdict.REJECT else {"sent": ROWS}
    if code in SPLIT:
        expected = {"sent": ROWS}
    assert statuses(db_path) == expected


UNKNOWN = sorted({50001, 50999, 54000, 47777, 1, -5, 40050, 40916} - set(CODE_VERDICTS))


@pytest.mark.parametrize("code", UNKNOWN)
async def test_unknown_codes_confined_to_an_event_die_after_bounded_attempts(
    harness: Harness, db_path: Path, code: int
) -> None:
    """A code outside the table, answered only for one event while others are accepted, is
    retried a bounded number of times, the later retries a minute or more apart, then that
    event alone is dead with it."""
    assert code_verdict(code) is None
    insert(db_path, [purchase(i) for i in range(ROWS)])
    harness.fake.poison.add("order-1")
    harness.fake.poison_code = code
    harness.fake.poison_names_index = False
    for round_ in range(1, 8):  # other events keep arriving, and TikTok keeps accepting them
        await harness.drain(max_events=1)
        none_lost(db_path, round_ * ROWS, untried=True)
        [(status, attempts, due)] = query(
            db_path,
            "SELECT status, attempts, next_attempt_at FROM tiktok_outbox WHERE event_id='order-1'",
        )
        assert attempts == round_
        if status == "dead":
            break
        assert status == "pending"
        if attempts >= 3:
            assert due >= harness.clock.now + 60.0
        insert(db_path, [purchase(10 * round_ + i) for i in range(ROWS)])
        harness.clock.advance(LATER_S)
    assert statuses(db_path) == {"sent": round_ * ROWS - 1, "dead": 1}
    [(event_id, _, attempts, last_code, reason, _)] = [r for r in rows(db_path) if r[1] == "dead"]
    assert (event_id, attempts, last_code) == ("order-1", 5, str(code))
    assert "rejected by the fake" in reason
    every_event_reached_tiktok(harness, db_path)


@pytest.mark.parametrize("code", UNKNOWN)
async def test_unknown_codes_answered_to_everything_pause(
    harness: Harness, db_path: Path, code: int
) -> None:
    """A code outside the table answered to every request pauses delivery (the storm rule) and
    dead-letters nothing, however many probes it answers; all is sent once it clears."""
    insert(db_path, [purchase(i) for i in range(ROWS)])
    harness.fake.script(Scripted(code=code, message="Something new", forever=True))
    for _ in range(6):
        totals = await harness.drain(max_events=1)
        assert totals.paused_reason == f"storm_{code}"
        none_lost(db_path)
        assert statuses(db_path) == {"pending": ROWS}
        harness.clock.advance(LATER_S)
    harness.fake.clear_script()
    await settle_all(harness, db_path, max_events=1)
    assert statuses(db_path) == {"sent": ROWS}
    every_event_reached_tiktok(harness, db_path)


# --- HTTP-level answers, the network and broken bodies ------------------------------------------


@pytest.mark.parametrize(
    "answer, code",
    [
        (Scripted(http_status=500, body=b""), "http_500"),
        (Scripted(http_status=500), "http_500"),
        (
            Scripted(http_status=502, body=b"<html><body><h1>502 Bad Gateway</h1></body></html>"),
            "http_502",
        ),
        (Scripted(http_status=503), "http_503"),
        (Scripted(http_status=504, body=b"upstream timed out"), "http_504"),
        (Scripted(http_status=408, body=b""), "http_408"),
        (Scripted(drop=True), "connection"),
        (Scripted(body=b'{"code": 0, "message": "O'), "bad_body"),
        (Scripted(body=b""), "bad_body"),
        (Scripted(body=b"[0]"), "bad_body"),
        (Scripted(body=b'{"code": "0", "message": "OK"}'), "bad_body"),
        (Scripted(body=b'{"code": true}'), "bad_body"),
        (Scripted(http_status=418, body=b""), "http_418"),
    ],
    ids=lambda value: value if isinstance(value, str) else None,
)
async def test_transient_answers_are_retried(
    harness: Harness, db_path: Path, answer: Scripted, code: str
) -> None:
    """5xx, HTML, garbage, empty or truncated bodies and resets are retried, then delivered."""
    insert(db_path, [purchase(i) for i in range(ROWS)])
    harness.fake.script(answer)
    totals = await harness.drain()
    assert totals.delivered == 0
    first = rows(db_path)
    assert {(s, a, c) for _, s, a, c, *_ in first} == {("pending", 1, code)}
    assert all(reason for *_, reason, _ in first)
    # Never an HTML page or a raw body in what an operator reads.
    assert not any("<html" in reason or "upstream" in reason for *_, reason, _ in first)
    none_lost(db_path)
    await settle_all(harness, db_path)
    assert statuses(db_path) == {"sent": ROWS}
    every_event_reached_tiktok(harness, db_path)


async def test_slower_than_the_timeout(harness: Harness, db_path: Path) -> None:
    """An answer slower than the request timeout is retried; TikTok merges the late copy."""
    harness.timeout_s = 0.2
    insert(db_path, [purchase(i) for i in range(ROWS)])
    # The fake answers (and records the events) after 0.6 s, long after the client gave up.
    harness.fake.script(Scripted(delay_s=0.6))
    await harness.drain()
    assert {(s, a, c) for _, s, a, c, *_ in rows(db_path)} == {("pending", 1, "timeout")}
    await settle_all(harness, db_path)
    assert statuses(db_path) == {"sent": ROWS}
    every_event_reached_tiktok(harness, db_path)


@pytest.mark.parametrize("status", [429, 503])
@pytest.mark.parametrize("form", ["seconds", "http-date"])
async def test_retry_after_is_honoured(
    harness: Harness, db_path: Path, status: int, form: str
) -> None:
    """Retry-After, in seconds or as an HTTP date, holds the rows back at least that long."""
    wait = 120
    value = (
        str(wait)
        if form == "seconds"
        else email.utils.formatdate(harness.clock.now + wait, usegmt=True)
    )
    insert(db_path, [purchase(i) for i in range(ROWS)])
    harness.fake.script(Scripted(http_status=status, body=b"", retry_after=value))
    await harness.drain()
    found = rows(db_path)
    code = f"http_{status}"
    # 429 is a rate limit (no attempt counted), 503 a failure (one attempt); both wait.
    attempts = 0 if status == 429 else 1
    assert {(s, a, c) for _, s, a, c, *_ in found} == {("pending", attempts, code)}
    # An HTTP date has one-second resolution.
    assert all(due >= harness.clock.now + wait - 1 for *_, due in found), found
    harness.clock.advance(wait - 5)
    await harness.drain()
    assert statuses(db_path) == {"pending": ROWS}, "sent before Retry-After"
    await settle_all(harness, db_path)
    assert statuses(db_path) == {"sent": ROWS}


@pytest.mark.parametrize(
    "status, reason", [(401, "http_401"), (403, "http_403"), (404, "http_404"), (405, "http_405")]
)
async def test_credential_and_url_statuses_pause(
    harness: Harness, db_path: Path, status: int, reason: str
) -> None:
    """HTTP 401/403/404/405 without a TikTok code pause delivery; nothing dead, then resumed."""
    insert(db_path, [purchase(i) for i in range(ROWS)])
    harness.fake.script(Scripted(http_status=status, body=b"<html>nope</html>"))
    totals = await harness.drain()
    assert totals.paused_reason == reason
    assert {(s, a, c) for _, s, a, c, *_ in rows(db_path)} == {("pending", 0, reason)}
    await settle_all(harness, db_path)
    assert statuses(db_path) == {"sent": ROWS}


async def test_payload_too_large_is_split(harness: Harness, db_path: Path) -> None:
    """HTTP 413 splits the request; the halves are delivered and nothing dies."""
    insert(db_path, [purchase(i) for i in range(ROWS)])
    harness.fake.script(Scripted(http_status=413, body=b""))
    await harness.drain()
    assert statuses(db_path) == {"sent": ROWS}
    assert harness.fake.requests == 3


async def test_revoked_token_stays_paused_without_losing_rows(
    harness: Harness, db_path: Path
) -> None:
    """While the token is refused, every probe keeps the rows pending with code 40105."""
    insert(db_path, [purchase(i) for i in range(ROWS)])
    harness.fake.token = "rotated"
    for _ in range(4):
        totals = await harness.drain()
        assert totals.paused_reason == "40105"
        none_lost(db_path)
        assert statuses(db_path) == {"pending": ROWS}
        harness.clock.advance(LATER_S)
    harness.fake.token = TOKEN
    await settle_all(harness, db_path)
    assert statuses(db_path) == {"sent": ROWS}
    assert query(db_path, "SELECT max(attempts) FROM tiktok_outbox") == [(1,)]


async def test_a_storm_of_mixed_failures_loses_nothing(harness: Harness, db_path: Path) -> None:
    """Every failure in a row, on 200 events in small batches: all arrive, none twice in the DB."""
    insert(db_path, [purchase(i) for i in range(STORM)])
    harness.fake.poison.add("order-77")
    harness.fake.script(
        Scripted(http_status=500, body=b""),
        Scripted(http_status=502, body=b"<html><body>Bad Gateway</body></html>"),
        Scripted(http_status=503, retry_after="3"),
        Scripted(http_status=429, retry_after="2"),
        Scripted(code=40100, message="Too many requests. Please retry in some time."),
        Scripted(code=50002, message="Error processing request on TikTok side."),
        Scripted(drop=True),
        Scripted(body=b'{"code": 0, "message": "O'),
        Scripted(body=b""),
        Scripted(code=40105, message="Access token is incorrect or has been revoked."),
        Scripted(code=51010, message="rpc timeout"),
    )
    await harness.drain(max_events=20)
    none_lost(db_path, STORM, untried=True)
    await settle_all(harness, db_path, max_events=20)
    none_lost(db_path, STORM)
    assert statuses(db_path) == {"sent": STORM - 1, "dead": 1}
    every_event_reached_tiktok(harness, db_path)
    assert {e for *_, e in harness.fake.accepted_ids()} == {
        f"order-{i}" for i in range(STORM) if i != 77
    }
