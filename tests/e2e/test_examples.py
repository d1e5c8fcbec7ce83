"""The insert examples in examples/, each run as its users would, then delivered by forwarder."""

from __future__ import annotations

import fcntl
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from forwarder.fake_tiktok import FakeTikTok
from tests.support.daemon import daemon_env, finish, forwarder, migrated
from tests.support.repo import ROOT
from tests.support.rows import query

EXAMPLES = ROOT / "examples"
EVENT_ID = "order-10492"
EMAIL_SHA256 = hashlib.sha256(b"alice@example.com").hexdigest()
PHONE_SHA256 = hashlib.sha256(b"+12133734253").hexdigest()
RUN_TIMEOUT_S = 60
NPM_TIMEOUT_S = 600  # better-sqlite3 compiles from source once (no prebuilt binary download)
# Debian's Go packages, used in GOPATH mode because the Go module proxy is out of reach here.
GOPATH = "/usr/share/gocode"
GO_PACKAGES = "golang-go golang-github-mattn-go-sqlite3-dev golang-github-lib-pq-dev"


@dataclass(frozen=True)
class Example:
    """One example program: its file under examples/, its runtime and its database."""

    path: str
    runtime: str
    database: str  # "sqlite" or "postgresql"

    @property
    def id(self) -> str:
        """The test id, e.g. ``node-sqlite``."""
        return f"{self.runtime}-{self.database}"


EXAMPLE_LIST = [
    Example("python/insert_sqlite.py", "python", "sqlite"),
    Example("python/insert_postgres.py", "python", "postgresql"),
    Example("node/insert_sqlite.mjs", "node", "sqlite"),
    Example("node/insert_postgres.mjs", "node", "postgresql"),
    Example("php/insert_sqlite.php", "php", "sqlite"),
    Example("php/insert_postgres.php", "php", "postgresql"),
    Example("go/sqlite/main.go", "go", "sqlite"),
    Example("go/postgres/main.go", "go", "postgresql"),
    Example("shell/insert_sqlite.sh", "shell", "sqlite"),
    Example("shell/insert_postgres.sh", "shell", "postgresql"),
]


def require(tool: str, install: str) -> str:
    """The path of *tool*; fail the test, naming the package, if it is not installed."""
    found = shutil.which(tool)
    if found is None:
        pytest.fail(f"{tool} is not installed: {install} (.ci/run installs it)", pytrace=False)
    return found


def run(command: list[str], env: dict[str, str], cwd: Path) -> None:
    """Run one example process to completion; fail with its output if it fails."""
    result = subprocess.run(
        command,
        check=False,
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
    )
    assert result.returncode == 0, f"{command} exited {result.returncode}:\n{result.stderr}"


@pytest.fixture(scope="session")
def node_modules() -> Path:
    """examples/node's dependencies, installed once per lock file into a cache outside the tree."""
    node = require("node", "apt-get install nodejs")
    npm = require("npm", "apt-get install npm")
    source = EXAMPLES / "node"
    version = subprocess.run([node, "--version"], capture_output=True, text=True, check=True)
    key = hashlib.sha256(
        (source / "package.json").read_bytes()
        + (source / "package-lock.json").read_bytes()
        + f"{version.stdout.strip()} {platform.machine()}".encode()
    ).hexdigest()[:16]
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "forwarder-examples"
    target = cache / f"node-{key}"
    if (target / ".complete").exists():
        return target / "node_modules"
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / f"node-{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another test session may be installing the same
        if not (target / ".complete").exists():
            building = Path(tempfile.mkdtemp(prefix="node-", dir=cache))
            for name in ("package.json", "package-lock.json"):
                shutil.copy(source / name, building / name)
            env = {**os.environ, "npm_config_build_from_source": "true"}
            if Path("/usr/include/node/node.h").exists():
                env.setdefault("npm_config_nodedir", "/usr")  # headers, not a download
            result = subprocess.run(
                [npm, "ci", "--no-audit", "--no-fund"],
                check=False,
                cwd=building,
                env=env,
                capture_output=True,
                text=True,
                timeout=NPM_TIMEOUT_S,
            )
            if result.returncode != 0:
                shutil.rmtree(building, ignore_errors=True)
                pytest.fail(f"npm ci in examples/node failed:\n{result.stderr[-3000:]}")
            shutil.rmtree(target, ignore_errors=True)
            building.rename(target)
            (target / ".complete").touch()
    return target / "node_modules"


def command_for(example: Example, workdir: Path, request: pytest.FixtureRequest) -> list[str]:
    """The command line that runs *example* (before its database argument)."""
    source = EXAMPLES / example.path
    if example.runtime == "python":
        return [sys.executable, str(source)]
    if example.runtime == "node":
        node = require("node", "apt-get install nodejs")
        modules = request.getfixturevalue("node_modules")
        # A copy beside a node_modules link resolves its imports as in examples/node.
        shutil.copy(source, workdir / source.name)
        (workdir / "node_modules").symlink_to(modules, target_is_directory=True)
        return [node, str(workdir / source.name)]
    if example.runtime == "php":
        php = require("php", "apt-get install php-cli php-sqlite3 php-pgsql")
        return [php, str(source)]
    if example.runtime == "go":
        go = require("go", f"apt-get install {GO_PACKAGES}")
        for package in ("github.com/mattn/go-sqlite3", "github.com/lib/pq"):
            if not (Path(GOPATH) / "src" / package).is_dir():
                pytest.fail(f"{package} is not in {GOPATH}: apt-get install {GO_PACKAGES}")
        binary = workdir / "example"
        env = {**os.environ, "GO111MODULE": "off", "GOPATH": GOPATH, "GOFLAGS": ""}
        result = subprocess.run(
            [go, "build", "-o", str(binary), str(source)],
            check=False,
            env=env,
            capture_output=True,
            text=True,
            timeout=NPM_TIMEOUT_S,
        )
        assert result.returncode == 0, f"go build {example.path} failed:\n{result.stderr}"
        return [str(binary)]
    assert example.runtime == "shell"
    if example.database == "sqlite":
        require("sqlite3", "apt-get install sqlite3")
    else:
        require("psql", "apt-get install postgresql-client")
    return ["sh", str(source)]


def as_list(value: Any) -> list[Any]:
    """A user field as a list (the daemon may send a string or a list)."""
    return value if isinstance(value, list) else [value]


def assert_delivered(fake: FakeTikTok) -> None:
    """The fake accepted one Purchase 'order-10492' with hashed and raw identifiers as due."""
    assert [(event["event"], event["event_id"]) for event in fake.accepted] == [
        ("Purchase", EVENT_ID)
    ]
    event = fake.accepted[0]
    user = event["user"]
    assert as_list(user["email"]) == [EMAIL_SHA256]
    assert as_list(user["phone"]) == [PHONE_SHA256]
    assert user["ip"] == "203.0.113.7"
    assert user["user_agent"] == "Mozilla/5.0 (X11; Linux x86_64)"
    assert user["ttclid"] == "E.C.P.abc123"
    assert user["ttp"] == "2Xwabc123"
    assert event["properties"]["value"] == 46
    assert event["properties"]["contents"][0]["content_id"] == "sku-1077218"
    assert event["page"]["url"] == "https://shop.example/checkout/thanks"


async def pg_count(url: str, table: str) -> int:
    """Rows in *table* of the PostgreSQL database *url*."""
    conn = await asyncpg.connect(url)
    try:
        return int(await conn.fetchval(f"SELECT count(*) FROM {table}"))
    finally:
        await conn.close()


async def deliver(env: dict[str, str]) -> None:
    """Run `forwarder run --once` and check it exited 0."""
    code, _, err = await finish(await forwarder(env, "run", "--once"))
    assert code == 0, err


def cases(database: str) -> list[Any]:
    """The examples of one database, as pytest parameters (Node's gets time for npm ci)."""
    return [
        pytest.param(
            example,
            id=example.id,
            marks=[pytest.mark.timeout(NPM_TIMEOUT_S + 120)] if example.runtime == "node" else [],
        )
        for example in EXAMPLE_LIST
        if example.database == database
    ]


@pytest.mark.parametrize("example", cases("sqlite"))
async def test_sqlite_example(
    example: Example,
    tmp_path: Path,
    fake: FakeTikTok,
    request: pytest.FixtureRequest,
) -> None:
    """Run twice (path as argument, then DB_PATH), it leaves one event, which forwarder delivers."""
    db_path = tmp_path / "shop.db"
    env = daemon_env(db_path, fake)
    await migrated(db_path, env)
    command = command_for(example, tmp_path, request)
    run([*command, str(db_path)], env, tmp_path)
    run(command, {**env, "DB_PATH": str(db_path)}, tmp_path)
    assert query(db_path, "SELECT count(*) FROM orders") == [(1,)]
    assert query(db_path, "SELECT event_id, status FROM tiktok_outbox") == [(EVENT_ID, "pending")]
    await deliver(env)
    assert_delivered(fake)
    assert query(db_path, "SELECT status FROM tiktok_outbox") == [("sent",)]


@pytest.mark.parametrize("example", cases("postgresql"))
async def test_postgresql_example(
    example: Example,
    tmp_path: Path,
    fake: FakeTikTok,
    pg_url: str,
    request: pytest.FixtureRequest,
) -> None:
    """Run twice (URL as argument, then DATABASE_URL), it leaves one event, and it is delivered."""
    env = daemon_env(tmp_path / "unused.db", fake, FORWARDER_DATABASE_URL=pg_url)
    code, _, err = await finish(await forwarder(env, "migrate"))
    assert code == 0, err
    command = command_for(example, tmp_path, request)
    url = pg_url
    if example.runtime == "go":
        url += "?sslmode=disable"  # lib/pq requires TLS unless told; the test cluster has none
    run([*command, url], env, tmp_path)
    run(command, {**env, "DATABASE_URL": url}, tmp_path)
    assert await pg_count(pg_url, "orders") == 1
    assert await pg_count(pg_url, "tiktok_outbox") == 1
    await deliver(env)
    assert_delivered(fake)


def test_every_example_is_tested_and_listed() -> None:
    """Every insert example in examples/ is run by a test here and has a line in the README."""
    readme = (EXAMPLES / "README.md").read_text()
    files = {
        str(path.relative_to(EXAMPLES))
        for pattern in ("*/insert_*", "go/*/main.go")
        for path in EXAMPLES.glob(pattern)
    }
    assert files == {example.path for example in EXAMPLE_LIST}
    assert [path for path in sorted(files) if f"({path})" not in readme] == []
