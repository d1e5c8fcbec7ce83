"""Secrets and personal data: nothing the daemon or its commands print holds the token, a raw
e-mail address or a raw phone number; the HTTP endpoint is loopback-only by default; TLS cannot
be switched off except towards loopback."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import socket
import ssl
import subprocess
from pathlib import Path

import aiohttp
import orjson
import pytest
from aiohttp import web

from forwarder.fake_tiktok import FakeTikTok
from forwarder.tiktok.spec import TRACK_PATH
from tests.support.daemon import FORWARDER, daemon_env, finish, forwarder, free_port, migrated
from tests.support.rows import insert, purchase, query, statuses
from tests.support.waiting import wait_until

SECRET_TOKEN = "tt-SECRET-7b1c9e2f4d6a8b0c1e3f"
EMAIL = "Alice.Secret+Tag@Example.com"
BAD_EMAIL = "bob.secret@@example.com"
PHONE = "+1 (213) 373-4253"
#: Every spelling of the token and identifiers that must never be printed.
FORBIDDEN = (
    SECRET_TOKEN,
    "7b1c9e2f4d6a8b0c1e3f",
    EMAIL.lower(),
    "alice.secret",
    "bob.secret",
    "+12133734253",
    "2133734253",
    "373-4253",
    "373 4253",
    "(213)",
)


def assert_clean(where: str, text: str) -> None:
    """Fail naming *where* if *text* holds the token or a raw identifier, in any spelling."""
    lowered = text.lower()
    for needle in FORBIDDEN:
        assert needle.lower() not in lowered, f"{where} contains {needle!r}"


@pytest.fixture
def fake_options() -> dict[str, object]:
    """The fake TikTok expects the secret token."""
    return {"token": SECRET_TOKEN}


def raw_user(**extra: object) -> dict[str, object]:
    """A user object with the raw identifiers this module hunts for."""
    return {"email": EMAIL, "phone": PHONE, "external_id": "cust-1", "ip": "203.0.113.7", **extra}


def row(event_id: str, body: object) -> dict[str, object]:
    """An outbox row with *body* as its payload."""
    return {"event_id": event_id, "event": "Purchase", "payload": orjson.dumps(body).decode()}


MALFORMED = [
    # Raw identifiers where they do not belong: each row is dead, and its reason quotes none.
    row("m-typo", {"user": {"emial": EMAIL}}),
    row("m-top", {"email": EMAIL, "user": raw_user()}),
    row("m-object", {"user": {"email": {"address": EMAIL}}}),
    row("m-phone-object", {"user": {"phone": {"number": PHONE}}}),
    row("m-list", {"user": {"email": [EMAIL, 5]}}),
    row("m-value", {"user": raw_user(), "properties": {"value": EMAIL, "currency": "USD"}}),
    row("m-consent", {"user": raw_user(), "consent": {"ad_user_data": EMAIL}}),
    row("m-unknown", {"user": raw_user(zip=PHONE)}),
    {**row("m-time", {"user": raw_user()}), "event_time": EMAIL},
    {**row("m-source", {"user": raw_user()}), "event_source": PHONE},
]
WARNED = [
    # Invalid identifiers are dropped with a warning, which names the field only.
    row("w-email", {"user": {"email": BAD_EMAIL, "external_id": "x"}}),
    row("w-phone", {"user": {"phone": "call " + PHONE + " after 5", "external_id": "y"}}),
]


async def commands(env: dict[str, str], phase: str) -> dict[str, str]:
    """What an operator sees: status (text and JSON), dead list (text and JSON), check."""
    seen = {}
    for args in (
        ("status",),
        ("status", "--json"),
        ("dead", "list"),
        ("dead", "list", "--json"),
        ("check",),
    ):
        code, out, err = await finish(await forwarder(env, *args))
        assert code == 0, (args, err)
        seen[f"{phase}: forwarder {' '.join(args)}"] = out + err
    return seen


async def scrape(port: int, phase: str) -> dict[str, str]:
    """GET /metrics, /healthz and /readyz from the daemon."""
    seen = {}
    async with aiohttp.ClientSession() as session:
        for path in ("/metrics", "/healthz", "/readyz"):
            async with session.get(f"http://127.0.0.1:{port}{path}") as response:
                seen[f"{phase}: GET {path}"] = await response.text()
    return seen


async def test_nothing_printed_or_served_holds_a_secret(
    db_path: Path, fake: FakeTikTok, tmp_path: Path
) -> None:
    """Across a pause, rejections, malformed rows and delivery, no output holds a secret."""
    port = free_port()
    env = daemon_env(
        db_path,
        fake,
        TIKTOK_ACCESS_TOKEN=SECRET_TOKEN,
        FORWARDER_HTTP_ADDR=f"127.0.0.1:{port}",
        FORWARDER_LOG_LEVEL="debug",
    )
    await migrated(db_path, env)
    good = [
        {**purchase(i), "payload": orjson.dumps({"user": raw_user()}).decode()} for i in range(30)
    ]
    poison = {**good[0], "event_id": "order-poison"}
    insert(db_path, [*good, poison, *MALFORMED, *WARNED])
    total = len(good) + 1 + len(MALFORMED) + len(WARNED)
    fake.poison.add("order-poison")
    fake.token = "rotated-elsewhere"  # TikTok refuses our token: 40105, delivery pauses
    seen: dict[str, str] = {}
    daemon = await forwarder(env, "run")
    try:
        await wait_until(lambda: fake.answers[40105] >= 1, 30, "a 40105 answer")
        await wait_until(lambda: statuses(db_path).get("dead", 0) >= 10, 30, "malformed rows dead")
        await wait_until(lambda: _listening(port), 30, "the HTTP endpoint")
        seen |= await commands(env, "paused")
        seen |= await scrape(port, "paused")
        assert '"paused": true' in seen["paused: forwarder status --json"]
        fake.token = SECRET_TOKEN
        await wait_until(
            lambda: set(statuses(db_path)) <= {"sent", "dead"}, 30, "every row sent or dead"
        )
        seen |= await commands(env, "delivered")
        seen |= await scrape(port, "delivered")
    finally:
        daemon.send_signal(signal.SIGTERM)
        code, out, err = await finish(daemon)
    assert code == 0, err
    seen["daemon stdout+stderr"] = out + err
    # A happy-path run of its own, in the console format a person reads on a terminal.
    insert(
        db_path,
        [
            {**purchase(i), "payload": orjson.dumps({"user": raw_user()}).decode()}
            for i in range(100, 110)
        ],
    )
    code, out, err = await finish(
        await forwarder({**env, "FORWARDER_LOG_FORMAT": "console"}, "run", "--once")
    )
    assert code == 0, err
    seen["run --once (console)"] = out + err

    dead_rows = len(MALFORMED) + 1
    assert statuses(db_path) == {"sent": total - dead_rows + 10, "dead": dead_rows}
    dead = dict(
        query(db_path, "SELECT event_id, last_error FROM tiktok_outbox WHERE status='dead'")
    )
    assert set(dead) == {"order-poison"} | {r["event_id"] for r in MALFORMED}
    assert all(dead.values()), dead
    # The checks saw what they should, so a clean scan means something.
    assert "forwarder_events_dead_total" in seen["delivered: GET /metrics"]
    assert "m-typo" in seen["delivered: forwarder dead list"]
    assert '"event": "event_warnings"' in seen["daemon stdout+stderr"]
    assert "destination_paused" in seen["daemon stdout+stderr"]
    for where, text in seen.items():
        assert_clean(where, text)


def _listening(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
        return True
    return False


async def test_stored_rows_keep_no_raw_identifier_once_sent(
    db_path: Path, fake: FakeTikTok
) -> None:
    """A sent row's payload holds hashes only; a dead row keeps its raw payload to be fixed."""
    env = daemon_env(db_path, fake, TIKTOK_ACCESS_TOKEN=SECRET_TOKEN)
    await migrated(db_path, env)
    insert(db_path, [{**purchase(1), "payload": orjson.dumps({"user": raw_user()}).decode()}])
    code, _, err = await finish(await forwarder(env, "run", "--once"))
    assert code == 0, err
    [(stored,)] = query(db_path, "SELECT payload FROM tiktok_outbox WHERE status='sent'")
    assert_clean("the sent row's payload", stored)


def test_token_never_echoed_by_a_bad_setting(db_path: Path) -> None:
    """A token refused at start-up (Bearer prefix, spaces) is named, never printed."""
    for token in (f"Bearer {SECRET_TOKEN}", f"{SECRET_TOKEN} trailing words"):
        env = daemon_env(db_path, _NoFake(), TIKTOK_ACCESS_TOKEN=token)
        done = subprocess.run(
            [*FORWARDER, "run"], env=env, check=False, capture_output=True, timeout=30
        )
        assert done.returncode == 2, done.stderr
        assert b"TIKTOK_ACCESS_TOKEN" in done.stderr
        assert_clean("the start-up error", (done.stdout + done.stderr).decode())


def test_database_password_never_printed(tmp_path: Path) -> None:
    """A PostgreSQL URL's password stays out of every error the commands print."""
    port = free_port()  # nothing listens there: the connection is refused at once
    env = daemon_env(
        tmp_path / "unused.db",
        _NoFake(),
        FORWARDER_DATABASE_URL=f"postgresql://forwarder:pw-SECRET-31415@127.0.0.1:{port}/outbox",
    )
    for args in (("status",), ("check",), ("dead", "list"), ("run", "--once")):
        done = subprocess.run(
            [*FORWARDER, *args], env=env, check=False, capture_output=True, timeout=60
        )
        assert done.returncode != 0, args
        text = (done.stdout + done.stderr).decode()
        assert "pw-SECRET-31415" not in text, (args, text)


@dataclasses.dataclass
class _NoFake:
    """Stands in for the fake where a command never reaches TikTok."""

    url: str = "http://127.0.0.1:9"


# --- Where the daemon listens ------------------------------------------------------------------


def _proc_net() -> bool:
    return os.path.exists("/proc/net/tcp")


def _listeners(port: int) -> set[str]:
    """Local addresses (hex, as /proc/net/tcp writes them) listening on *port*."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as lines:
            for line in list(lines)[1:]:
                fields = line.split()
                address, hex_port = fields[1].rsplit(":", 1)
                if int(hex_port, 16) == port and fields[3] == "0A":  # 0A: LISTEN
                    found.add(address)
    return found


async def test_daemon_listens_on_loopback_only_by_default(db_path: Path, fake: FakeTikTok) -> None:
    """A daemon started without FORWARDER_HTTP_ADDR listens on 127.0.0.1:9464 and nowhere else."""
    if _listening(9464):
        pytest.skip("port 9464 is taken on this machine")
    if not _proc_net():
        pytest.skip("no /proc/net/tcp to read listening sockets from")
    env = daemon_env(db_path, fake, TIKTOK_ACCESS_TOKEN=SECRET_TOKEN)
    del env["FORWARDER_HTTP_ADDR"]
    await migrated(db_path, env)
    daemon = await forwarder(env, "run")
    try:
        await wait_until(lambda: _listening(9464) or daemon.returncode is not None, 30)
        listeners = _listeners(9464)
    finally:
        daemon.send_signal(signal.SIGTERM)
        code, _, err = await finish(daemon)
    if code == 2 and "cannot listen" in err:
        pytest.skip("another process took port 9464 meanwhile")
    assert listeners == {"0100007F"}, listeners  # 127.0.0.1, little-endian hex


# --- TLS towards TikTok --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "http://business-api.tiktok.com",
        "http://10.1.2.3:8080",
        "http://[2001:db8::1]/",
        "http://localhost.example.com",
        "http://127.0.0.1.nip.io",
        "ftp://127.0.0.1",
    ],
)
def test_plain_http_off_loopback_is_refused(db_path: Path, url: str) -> None:
    """TIKTOK_API_URL without TLS to anything but loopback stops start-up with exit 2."""
    env = daemon_env(db_path, _NoFake(), TIKTOK_ACCESS_TOKEN=SECRET_TOKEN, TIKTOK_API_URL=url)
    done = subprocess.run(
        [*FORWARDER, "run"], env=env, check=False, capture_output=True, timeout=30
    )
    assert done.returncode == 2, done.stderr
    lines = done.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("forwarder: TIKTOK_API_URL"), lines


@pytest.fixture
def self_signed(tmp_path: Path) -> ssl.SSLContext:
    """A server TLS context with a self-signed certificate for 127.0.0.1 (needs openssl)."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    try:
        subprocess.run(
            [
                "openssl",
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "1",
                "-subj",
                "/CN=127.0.0.1",
                "-addext",
                "subjectAltName=IP:127.0.0.1",
                "-keyout",
                str(key),
                "-out",
                str(cert),
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )
    except (OSError, subprocess.CalledProcessError) as error:
        pytest.skip(f"cannot make a self-signed certificate: {error}")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context


async def test_untrusted_certificate_is_refused(
    db_path: Path, tmp_path: Path, self_signed: ssl.SSLContext
) -> None:
    """An https URL whose certificate is not trusted gets no event, whatever the environment."""
    requests: list[bytes] = []

    async def track(request: web.Request) -> web.Response:
        requests.append(await request.read())
        return web.json_response({"code": 0, "message": "OK", "request_id": "r", "data": {}})

    app = web.Application()
    app.router.add_post(TRACK_PATH, track)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=self_signed)
    await site.start()
    try:
        port = runner.addresses[0][1]
        env = daemon_env(
            db_path,
            _NoFake(f"https://127.0.0.1:{port}"),
            TIKTOK_ACCESS_TOKEN=SECRET_TOKEN,
            # What someone might try to switch verification off with: none of it may work.
            PYTHONHTTPSVERIFY="0",
            AIOHTTP_NO_VERIFY="1",
            SSL_CERT_FILE="/dev/null",
            CURL_CA_BUNDLE="",
        )
        await migrated(db_path, env)
        insert(db_path, [purchase(1)])
        code, out, err = await finish(await forwarder(env, "run", "--once"))
    finally:
        await runner.cleanup()
    assert code == 0, err
    assert requests == [], "an event was sent over TLS that was not verified"
    assert query(db_path, "SELECT status, last_code FROM tiktok_outbox") == [
        ("pending", "connection")
    ]
    assert_clean("the daemon's output", out + err)
