"""The first hour of a newcomer, with the programs as processes: set-up naming the command it
cannot run, the env examples and the service's environment, `make try`'s first event as the
README shows it, `make demo`, a daemon on port 0, a closed pipe, nothing outside the repository."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import orjson
import pytest

from forwarder import credentials
from forwarder.store.sqlite import migrate_sync
from tests.support.daemon import FORWARDER, daemon_env, finish, forwarder, migrated
from tests.support.harness import PIXEL, TOKEN
from tests.support.repo import ROOT, UNIT, example_lines, example_lines_from, unit_settings
from tests.support.rows import insert, purchase, statuses
from tests.support.waiting import wait_until

# --- 1. make test sets up what it needs ---------------------------------------------------------


def test_setup_names_the_command_when_it_cannot_install(tmp_path: Path) -> None:
    """Without root or sudo, a missing tool stops set-up with one line naming the command."""
    # A folder another user can enter: pytest's own temporary folders are private to root.
    bin_dir = Path(tempfile.mkdtemp(prefix="forwarder-setup-"))
    bin_dir.chmod(0o755)
    for tool in ("bash", "python3", "id", "sqlite3", "env", "apt-get"):
        found = shutil.which(tool)
        if found:
            (bin_dir / tool).symlink_to(found)
    command = ["bash", str(ROOT / "scripts" / "setup.sh"), "test"]
    if os.geteuid() == 0:  # as root it would install: run it as nobody instead
        setpriv = shutil.which("setpriv")
        assert setpriv, "setpriv (util-linux) runs the script as another user"
        command = [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", *command]
    try:
        done = subprocess.run(
            command,
            env={"PATH": str(bin_dir), "HOME": str(bin_dir)},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    finally:
        shutil.rmtree(bin_dir)
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "run: sudo apt-get update && sudo apt-get install" in lines[0]
    for package in ("prometheus", "php-cli", "golang-go", "systemd"):
        assert package in lines[0]


def test_setup_is_silent_when_nothing_is_missing() -> None:
    """On a machine with Python and venv, the run profile installs nothing and says nothing."""
    done = subprocess.run(
        ["bash", str(ROOT / "scripts" / "setup.sh"), "run"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")


# --- 2. the env files are safe to copy ---------------------------------------------------------


def test_a_copied_env_example_fails_with_one_line_on_the_placeholder(tmp_path: Path) -> None:
    """A .env copied without editing stops the commands with one line naming the pixel."""
    shutil.copy(ROOT / ".env.example", tmp_path / ".env")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TIKTOK_", "FORWARDER_"))}
    done = subprocess.run(
        [*FORWARDER, "check"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.count("\n") == 1 and "TIKTOK_PIXEL_CODE" in done.stderr


def test_the_service_env_example_and_unit_start_from_root(tmp_path: Path) -> None:
    """The unit's environment, the service env file and the token credential work from /."""
    active, _ = example_lines(ROOT / "deploy" / "forwarder.env.example")
    assert active["FORWARDER_DATABASE_URL"].startswith("sqlite:////")
    assert "TIKTOK_ACCESS_TOKEN" not in active
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TIKTOK_", "FORWARDER_"))}
    for assignment in unit_settings(UNIT.read_text())["Environment"]:
        name, _, value = assignment.partition("=")
        env[name] = value
    db = tmp_path / "state" / "forwarder.db"
    db.parent.mkdir()
    text = (ROOT / "deploy" / "forwarder.env.example").read_text()
    text = text.replace("<your pixel code>", PIXEL).replace(
        "sqlite:////var/lib/forwarder/forwarder.db", f"sqlite:///{db}"
    )
    # systemd puts the env file's assignments into the environment, over the unit's own.
    env.update(example_lines_from(text)[0])
    credentials_dir = tmp_path / "credentials"
    credentials_dir.mkdir()
    (credentials_dir / credentials.CREDENTIAL_NAME).write_text(TOKEN + "\n")
    env["CREDENTIALS_DIRECTORY"] = str(credentials_dir)
    for args in (["migrate"], ["check"]):
        done = subprocess.run(
            [*FORWARDER, *args],
            cwd="/",
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr
    assert "token         set (" + str(credentials_dir) in done.stdout
    assert TOKEN not in done.stdout + done.stderr


# --- 3. operators run the commands against the service -----------------------------------------


def test_check_and_run_share_one_validation(
    db_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """FORWARDER_LEASE=10s fails check and run alike, and check prints nothing as ok first."""
    env = daemon_env(db_path, _Unused(), FORWARDER_LEASE="10s", FORWARDER_REQUEST_TIMEOUT="15s")
    results = [
        subprocess.run(
            [*FORWARDER, *argv], env=env, capture_output=True, text=True, timeout=60, check=False
        )
        for argv in (["check"], ["run", "--once"])
    ]
    assert [r.returncode for r in results] == [2, 2]
    assert results[0].stderr == results[1].stderr
    assert "FORWARDER_LEASE" in results[0].stderr
    assert results[0].stdout == ""


class _Unused:
    """Stands in for the fake where no request is made."""

    url = "http://127.0.0.1:9"


# --- 4. a first event, seen --------------------------------------------------------------------


def _readme_block(after: str) -> str:
    """The first fenced block of the README after the sentence *after*."""
    readme = (ROOT / "README.md").read_text()
    rest = readme.split(after, 1)[1]
    return rest.split("```", 2)[1].split("\n", 1)[1]


async def test_the_quick_start_shows_a_first_event_arrive(tmp_path: Path) -> None:
    """make try's script, the README's insert and the output it promises, on a fresh machine."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TIKTOK_", "FORWARDER_"))}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["TRY_DIR"] = str(tmp_path)
    script = await asyncio.create_subprocess_exec(
        "bash",
        str(ROOT / "scripts" / "try.sh"),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        start_new_session=True,
    )
    seen: list[str] = []

    async def read() -> None:
        assert script.stdout is not None
        async for line in script.stdout:
            seen.append(line.decode())

    reader = asyncio.create_task(read())
    try:
        await wait_until(lambda: any("worker_started" in s for s in seen), 30, "the daemon")
        insert_command = _readme_block("insert one as\nyour application would:")
        done = await asyncio.to_thread(
            subprocess.run, ["bash", "-c", insert_command], cwd=tmp_path, check=False, timeout=30
        )
        assert done.returncode == 0
        expected = _readme_block("the first terminal shows the fake TikTok receiving it").strip()
        await wait_until(
            lambda: any(s.startswith(expected) for s in seen), 30, "the event at the fake"
        )
    finally:
        os.killpg(script.pid, signal.SIGINT)
        await asyncio.wait_for(script.wait(), 30)
        reader.cancel()
    assert statuses(tmp_path / "try.db") == {"sent": 1}


def test_make_demo_delivers_to_the_fake_and_shows_the_dead_rows(tmp_path: Path) -> None:
    """The demo script delivers 297 events, dead-letters 3 with reasons, and prints status."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TIKTOK_", "FORWARDER_"))}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["DEMO_DIR"] = str(tmp_path)
    done = subprocess.run(
        ["bash", str(ROOT / "scripts" / "demo.sh")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "sent 297  dead 3" in done.stdout
    assert '"unique_accepted":297' in done.stdout
    assert statuses(tmp_path / "demo-data" / "demo.db") == {"sent": 297, "dead": 3}


async def test_run_once_needs_no_port_and_port_zero_logs_the_real_one(db_path: Path) -> None:
    """A daemon on port 0 logs the port it bound; run --once beside it needs no port at all."""
    env = daemon_env(db_path, _Unused(), FORWARDER_HTTP_ADDR="127.0.0.1:0")
    await migrated(db_path, env)
    daemon = await forwarder(env, "run")
    lines: list[dict[str, object]] = []
    try:
        assert daemon.stderr is not None
        while not any(line.get("event") == "http_listening" for line in lines):
            raw = await asyncio.wait_for(daemon.stderr.readline(), 30)
            assert raw, "the daemon ended before listening"
            if raw.startswith(b"{"):
                lines.append(orjson.loads(raw))
        [listening] = [line for line in lines if line.get("event") == "http_listening"]
        addr = str(listening["addr"])
        assert re.fullmatch(r"127\.0\.0\.1:\d+", addr) and not addr.endswith(":0")
        code, _, err = await finish(
            await forwarder({**env, "FORWARDER_HTTP_ADDR": addr}, "run", "--once")
        )
        assert code == 0, err
    finally:
        daemon.send_signal(signal.SIGTERM)
        await finish(daemon)


# --- 6. a README that stands alone ---------------------------------------------------------------


def test_nothing_in_the_repository_needs_files_outside_it() -> None:
    """No tracked file links to or cites a file outside the repository."""
    tracked = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    offenders = [
        name
        for name in tracked
        if (ROOT / name).is_file()
        and not name.endswith("/test_first_hour.py")
        and re.search(
            r"\.\./shared|DESIGN\.md|STYLE\.md", (ROOT / name).read_text("utf-8", "ignore")
        )
    ]
    assert offenders == []


# --- 7. the small things ------------------------------------------------------------------------


def test_a_closed_pipe_ends_a_command_quietly(db_path: Path) -> None:
    """`forwarder inspect ... | head -1` prints no traceback when head stops reading."""
    migrate_sync(db_path)
    # Rows sharing one event_id under many pixels: more output than a pipe buffers.
    insert(db_path, [{**purchase(0), "pixel_code": f"P{i}"} for i in range(400)])
    env = daemon_env(db_path, _Unused())
    pipeline = f"{sys.executable} -m forwarder inspect order-0 | head -1"
    done = subprocess.run(
        ["bash", "-c", pipeline], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.stdout.startswith("row 1: Purchase 'order-0'")
    assert "Traceback" not in done.stderr and "BrokenPipe" not in done.stderr
