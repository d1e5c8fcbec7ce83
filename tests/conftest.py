"""Shared fixtures, and each test's tier marked from its folder.

Fixtures: a clean environment, real SQLite files migrated with the real migrations, the fake
TikTok on loopback, one HTTP session, the worker harness, another origin, a migrated store of
each kind (`backend`: SQLite and PostgreSQL), and (from tests/support/pg.py) a real PostgreSQL
server. Helpers are in tests/support.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

# Before the imports below: the helpers' asserts then report like the tests' own.
pytest.register_assert_rewrite("tests.support")

import aiohttp  # noqa: E402
import structlog  # noqa: E402

from forwarder.fake_tiktok import FakeTikTok  # noqa: E402
from forwarder.store.postgres import PostgresStore  # noqa: E402
from forwarder.store.sqlite import SQLiteStore, migrate_sync  # noqa: E402
from tests.support.backends import Backend, PostgresBackend, SQLiteBackend  # noqa: E402
from tests.support.harness import PIXEL, TOKEN, Harness  # noqa: E402
from tests.support.recorder import Recorder  # noqa: E402

pytest_plugins = ["tests.support.pg"]

TESTS = Path(__file__).resolve().parent
#: The tiers, each a folder and a marker (pyproject.toml registers the markers).
TIERS = ("unit", "integration", "e2e")


def tier_of(path: Path) -> str | None:
    """The tier of the test file at *path*: its first folder under tests/, if that is a tier."""
    parts = path.resolve().relative_to(TESTS).parts
    return parts[0] if len(parts) > 1 and parts[0] in TIERS else None


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test with its folder's tier, so `-m unit` selects what tests/unit holds."""
    for item in items:
        tier = tier_of(item.path)
        if tier is not None:
            item.add_marker(getattr(pytest.mark, tier))


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """Keep the developer's settings and .env out of every test."""
    for name in list(os.environ):
        if name.startswith(("TIKTOK_", "FORWARDER_")) or name == "CREDENTIALS_DIRECTORY":
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    yield
    # A command run in-process points structlog at pytest's captured stream; undo that.
    structlog.reset_defaults()


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    """A fresh SQLite file path."""
    return tmp_path / "outbox.db"


@pytest.fixture
async def store(db_path: Path) -> AsyncIterator[SQLiteStore]:
    """A store on a fresh SQLite file, migrated with the real migration files."""
    opened = await SQLiteStore.open(db_path)
    await opened.migrate()
    try:
        yield opened
    finally:
        await opened.close()


@pytest.fixture
def fake_options() -> dict[str, Any]:
    """How the fake TikTok is started; a module overrides this fixture for a slower fake."""
    return {}


@pytest.fixture
async def fake(fake_options: dict[str, Any]) -> AsyncIterator[FakeTikTok]:
    """The project's fake TikTok on a free loopback port, expecting TOKEN."""
    async with FakeTikTok(**{"token": TOKEN, **fake_options}) as server:
        yield server


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    """One HTTP session, as the daemon keeps."""
    async with aiohttp.ClientSession() as client:
        yield client


@pytest.fixture
def harness(store: SQLiteStore, fake: FakeTikTok, session: aiohttp.ClientSession) -> Harness:
    """A worker factory on a fresh outbox and a fresh fake."""
    return Harness(store, fake, session)


@pytest.fixture
async def recorder() -> AsyncIterator[Recorder]:
    """Another origin on loopback, which a redirect may point to."""
    async with Recorder() as server:
        yield server


@pytest.fixture(params=["sqlite", "postgres"])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    """A freshly migrated store of each kind, with an application's view of its database."""
    chosen: Backend
    if request.param == "sqlite":
        chosen = SQLiteBackend(tmp_path / "outbox.db")
        chosen.store = await SQLiteStore.open(tmp_path / "outbox.db")
    else:
        chosen = PostgresBackend(request.getfixturevalue("pg_url"))
        chosen.store = await PostgresStore.open(chosen.url)
    try:
        chosen.applied = await chosen.store.migrate()
        yield chosen
    finally:
        await chosen.store.close()


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, db_path: Path) -> Path:
    """Settings pointing the commands at a migrated test outbox."""
    migrate_sync(db_path)
    monkeypatch.setenv("FORWARDER_DATABASE_URL", f"sqlite:///{db_path}")
    monkeypatch.setenv("TIKTOK_PIXEL_CODE", PIXEL)
    monkeypatch.setenv("TIKTOK_ACCESS_TOKEN", TOKEN)
    monkeypatch.setenv("FORWARDER_LOG_LEVEL", "error")
    return db_path
