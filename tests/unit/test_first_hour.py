"""The first hour of a newcomer and an operator: set-up, env files, the token's places, commands
against the service, a first event seen, help that teaches, a README that stands alone."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson
import pytest

from forwarder import cli, credentials
from forwarder.errors import ConfigError
from forwarder.settings import Settings, load_settings

from .conftest import insert
from .helpers import purchase, statuses, wait_until
from .test_e2e import FORWARDER, PIXEL, TOKEN, daemon_env, finish, forwarder
from .test_systemd import UNIT, unit_settings

ROOT = Path(__file__).resolve().parent.parent
ALIASES = sorted(
    str(field.validation_alias)
    for field in Settings.model_fields.values()
    if field.validation_alias != "CREDENTIALS_DIRECTORY"
)
#: How a file would point outside the repository, at the team's own notes.
OUTSIDE = re.compile(r"\.\./shared|DESIGN\.md|STYLE\.md")
READ_ONLY = [["status"], ["check"], ["dead", "list"], ["inspect", "order-1"]]


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """Run one `forwarder` command in-process; return its exit code, stdout and stderr."""
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def example_lines(path: Path) -> tuple[dict[str, str], dict[str, str]]:
    """The assignments of an env file: (set, commented out as `# NAME=value`)."""
    return example_lines_from(path.read_text())


def example_lines_from(text: str) -> tuple[dict[str, str], dict[str, str]]:
    """The assignments of an env file's *text*: (set, commented out as `# NAME=value`)."""
    active: dict[str, str] = {}
    commented: dict[str, str] = {}
    for line in text.splitlines():
        match = re.fullmatch(r"(# )?([A-Z][A-Z0-9_]+)=(.*)", line)
        if match:
            (commented if match.group(1) else active)[match.group(2)] = match.group(3)
    return active, commented


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


def test_ci_runs_the_readme_commands_only() -> None:
    """CI calls make lint and make test, which do their own set-up."""
    commands = [
        line.strip()
        for line in (ROOT / ".ci" / "run").read_text().splitlines()
        if line.strip() and not line.startswith(("#", "set ", "cd "))
    ]
    assert commands == ["make lint", "make test"]
    makefile = (ROOT / "Makefile").read_text()
    assert "scripts/setup.sh test" in makefile.split("\ntest:", 1)[1].split("\n\n", 1)[0]


# --- 2. the env files are safe to copy ---------------------------------------------------------


def test_env_example_sets_only_placeholders_and_documents_every_setting() -> None:
    """.env.example leaves every default commented out, and its defaults are the real ones."""
    active, commented = example_lines(ROOT / ".env.example")
    assert active == {"TIKTOK_ACCESS_TOKEN": "", "TIKTOK_PIXEL_CODE": "<your pixel code>"}
    assert sorted(set(active) | set(commented)) == ALIASES
    defaults = Settings(_env_file=None)  # type: ignore[call-arg]
    for alias, value in commented.items():
        if alias in ("TIKTOK_ACCESS_TOKEN_FILE",):
            continue
        given = Settings(_env_file=None, **{alias: value})  # type: ignore[call-arg]
        name = next(n for n, f in Settings.model_fields.items() if f.validation_alias == alias)
        assert getattr(given, name) == getattr(defaults, name), alias


def test_every_setting_is_in_the_readme_table() -> None:
    """The README's settings table lists every setting the daemon reads."""
    readme = (ROOT / "README.md").read_text()
    listed = set(re.findall(r"^\| `([A-Z_]+)` \|", readme, re.MULTILINE))
    assert set(ALIASES) <= listed


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


def test_the_unit_hands_the_token_over_as_a_credential() -> None:
    """The shipped unit loads the token as a systemd credential from a root-only file."""
    settings = unit_settings(UNIT.read_text())
    assert settings["LoadCredential"] == [
        f"{credentials.CREDENTIAL_NAME}:/etc/forwarder/tiktok-access-token"
    ]


def _token_file(tmp_path: Path, content: bytes, mode: int = 0o600) -> Path:
    path = tmp_path / "token"
    path.write_bytes(content)
    path.chmod(mode)
    return path


def test_empty_token_variable_counts_as_unset(tmp_path: Path) -> None:
    """TIKTOK_ACCESS_TOKEN= left empty lets TIKTOK_ACCESS_TOKEN_FILE speak."""
    path = _token_file(tmp_path, b"tok-123\n")
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None, TIKTOK_ACCESS_TOKEN="", TIKTOK_ACCESS_TOKEN_FILE=str(path)
    )
    assert settings.token() == credentials.Token("tok-123", str(path))


@pytest.mark.parametrize(
    ("content", "mode", "expected"),
    [
        (b"", 0o600, "is empty"),
        (b"  \n", 0o600, "is empty"),
        (b"tok-123\n", 0o640, "readable by other users (mode 0640): chmod 600"),
        (b"tok-123\n", 0o604, "readable by other users (mode 0604)"),
        (b"tok\x1b[2J123", 0o600, "a control or non-ASCII character at position 4"),
        ("tök-123".encode(), 0o600, "a control or non-ASCII character at position 2"),
        (b"\xff\xfe", 0o600, "is not UTF-8 text"),
        (b"Bearer tok-123", 0o600, "without the 'Bearer' prefix"),
        (b"tok 123", 0o600, "holds a space at position 4"),
    ],
)
def test_a_bad_token_file_is_one_line_naming_the_file(
    tmp_path: Path, content: bytes, mode: int, expected: str
) -> None:
    """Each way a token file can be wrong gets its own line, naming the file, never the token."""
    path = _token_file(tmp_path, content, mode)
    with pytest.raises(ConfigError) as raised:
        credentials.read_token(None, path, None)
    message = str(raised.value)
    assert expected in message and str(path) in message
    assert "123" not in message.replace(str(path), "") or expected.endswith("position 4")


def test_a_token_file_that_cannot_be_read_is_named(tmp_path: Path) -> None:
    """A missing file or a folder is named, with the reason."""
    for path, reason in ((tmp_path / "absent", "No such file"), (tmp_path, "Is a directory")):
        with pytest.raises(ConfigError, match=reason) as raised:
            credentials.read_token(None, path, None)
        assert str(path) in str(raised.value)


def test_a_byte_order_mark_is_not_part_of_the_token(tmp_path: Path) -> None:
    """A token file saved with a UTF-8 byte-order mark gives the token without it."""
    path = _token_file(tmp_path, "\ufefftok-123\r\n".encode())
    assert credentials.read_token(None, path, None).value == "tok-123"


def test_the_systemd_credential_is_read_and_two_places_are_refused(tmp_path: Path) -> None:
    """$CREDENTIALS_DIRECTORY/tiktok-access-token is a source; a second source is an error."""
    (tmp_path / credentials.CREDENTIAL_NAME).write_text("tok-cred\n")
    assert credentials.read_token(None, None, tmp_path).value == "tok-cred"
    with pytest.raises(ConfigError, match="two places"):
        credentials.read_token("tok-env", None, tmp_path)
    with pytest.raises(ConfigError, match="is not set"):
        credentials.read_token(" ", None, tmp_path / "elsewhere")


# --- 3. operators run the commands against the service -----------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ["run"],
        ["migrate"],
        ["enqueue"],
        ["status"],
        ["dead", "list"],
        ["dead", "replay"],
        ["dead", "purge"],
        ["inspect", "x"],
        ["check"],
    ],
)
def test_every_command_takes_env_file_and_database_url(argv: list[str]) -> None:
    """--env-file and --database-url are accepted by every command."""
    args = cli.parser().parse_args([*argv, "--env-file", "f.env", "--database-url", "sqlite:///x"])
    assert (args.env_file, args.database_url) == ("f.env", "sqlite:///x")


@pytest.mark.parametrize("argv", READ_ONLY)
def test_read_only_commands_never_create_a_database(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    """A missing database is one line and exit 1; no file or folder appears."""
    os.environ["TIKTOK_ACCESS_TOKEN"] = TOKEN
    try:
        before = sorted(tmp_path.rglob("*"))
        for url in ("sqlite:///outbox.db", "sqlite:///sub/dir/outbox.db"):
            code, out, err = run(capsys, *argv, "--database-url", url)
            assert code == 1, (out, err)
            message = (out + err).strip()
            assert message.count("\n") <= 3 and "no database at" in message.splitlines()[-1]
        assert sorted(tmp_path.rglob("*")) == before
    finally:
        del os.environ["TIKTOK_ACCESS_TOKEN"]


def test_migrate_creates_the_file_but_not_its_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """migrate makes a missing database file, and refuses a path whose folder is missing."""
    code, _, err = run(capsys, "migrate", "--database-url", "sqlite:///sub/outbox.db")
    assert code == 1 and "the folder" in err and "does not exist" in err
    assert not (tmp_path / "sub").exists()
    code, out, _ = run(capsys, "migrate", "--database-url", "sqlite:///outbox.db")
    assert code == 0 and out.startswith("applied")
    assert (tmp_path / "outbox.db").exists()


def test_status_reads_the_service_through_its_env_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`status --env-file` finds the database the env file names, from any directory."""
    db = tmp_path / "state.db"
    env_file = tmp_path / "service.env"
    env_file.write_text(f"FORWARDER_DATABASE_URL=sqlite:///{db}\nTIKTOK_PIXEL_CODE={PIXEL}\n")
    assert run(capsys, "migrate", "--env-file", str(env_file))[0] == 0
    insert(db, [purchase(1)])
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    os.chdir(elsewhere)
    code, out, _ = run(capsys, "status", "--env-file", str(env_file))
    assert code == 0 and "pending 1" in out
    code, _, err = run(capsys, "status", "--env-file", str(tmp_path / "absent.env"))
    assert code == 2 and "no such file" in err


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
    from .test_e2e import migrated  # noqa: PLC0415

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


# --- 5. help that teaches ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ["run"],
        ["migrate"],
        ["enqueue"],
        ["status"],
        ["dead", "list"],
        ["dead", "replay"],
        ["dead", "purge"],
        ["inspect"],
        ["check"],
    ],
)
def test_every_help_has_defaults_settings_an_example_and_exit_codes(
    capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    """--help says what a command does, the settings it reads, an example and its exit codes."""
    with pytest.raises(SystemExit) as done:
        cli.main([*argv, "--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    for needle in ("settings read:", "example:", "exit codes:", "--env-file", "--database-url"):
        assert needle in text, needle
    assert "FORWARDER_DATABASE_URL" in text
    assert re.search(r"^  0  ", text, re.MULTILINE)


# --- 6. a README that stands alone ---------------------------------------------------------------


def test_readme_is_short_and_its_links_resolve() -> None:
    """The README reads in minutes, and every local link it and the docs make exists."""
    readme = ROOT / "README.md"
    assert len(readme.read_text().splitlines()) <= 200
    for page in [readme, *(ROOT / "docs").glob("*.md")]:
        for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", page.read_text()):
            assert (page.parent / target).exists(), f"{page.name} links to missing {target}"


def test_nothing_in_the_repository_needs_files_outside_it() -> None:
    """No tracked file links to or cites a file outside the repository."""
    tracked = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    offenders = [
        name
        for name in tracked
        if (ROOT / name).is_file()
        and not name.startswith("tests/test_first_hour")
        and re.search(
            r"\.\./shared|DESIGN\.md|STYLE\.md", (ROOT / name).read_text("utf-8", "ignore")
        )
    ]
    assert offenders == []


# --- 7. the small things ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        (
            "FORWARDER_HTTP_ADDR",
            ":99999",
            "FORWARDER_HTTP_ADDR: the port must be between 0 and 65535",
        ),
        ("FORWARDER_HTTP_ADDR", "127.0.0.1:http", "the port must be a number"),
        ("FORWARDER_HTTP_ADDR", ":9464", "the host is missing"),
        ("FORWARDER_PHONE_REGION", "XX", "FORWARDER_PHONE_REGION: must be a two-letter region"),
        ("FORWARDER_LEASE", "soon", "FORWARDER_LEASE: must be a duration like 30s"),
        ("TIKTOK_PIXEL_CODE", "<your pixel code>", "TIKTOK_PIXEL_CODE: must be the pixel code"),
    ],
)
def test_setting_errors_read_plainly(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, expected: str
) -> None:
    """A bad setting's one line names it and says what is wrong, without pydantic's prefix."""
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as raised:
        load_settings(None)
    message = str(raised.value)
    assert message.startswith(f"{name}: ") and expected in message
    assert "Value error" not in message


def test_dead_list_marks_a_cut_reason(
    db_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reason too long for the table ends with an ellipsis; --json keeps it whole."""
    from forwarder.store.sqlite import migrate_sync  # noqa: PLC0415

    migrate_sync(db_path)
    monkeypatch.setenv("FORWARDER_DATABASE_URL", f"sqlite:///{db_path}")
    insert(db_path, [purchase(1)])
    reason = "TikTok rejected the event (code 40002): " + "x" * 200
    from .helpers import query  # noqa: PLC0415

    query(db_path, "SELECT 1")
    import sqlite3  # noqa: PLC0415

    conn = sqlite3.connect(db_path)
    with conn:
        conn.execute(
            "UPDATE tiktok_outbox SET status='dead', last_code='40002', last_error=?, updated_at=?",
            (reason, time.time()),
        )
    conn.close()
    code, out, _ = run(capsys, "dead", "list")
    assert code == 0
    row = out.splitlines()[1]
    assert row.endswith("…") and reason not in row
    code, out, _ = run(capsys, "dead", "list", "--json")
    assert orjson.loads(out)[0]["reason"] == reason


def test_token_file_mode_check_uses_group_and_other_bits(tmp_path: Path) -> None:
    """Mode 0600 and 0400 pass; the check reads group and other read bits only."""
    for mode in (0o600, 0o400):
        path = _token_file(tmp_path, b"tok-1", mode)
        assert credentials.read_token(None, path, None).value == "tok-1"
        assert not stat.S_IMODE(path.stat().st_mode) & 0o044


@pytest.mark.parametrize(
    ("password", "shown"),
    [
        ("1", "details withheld: they contain the password's text"),
        ("sql", "Connect call failed"),
        ("long-secret-9", "Connect call failed"),
    ],
)
def test_a_database_password_is_hidden_without_garbling_the_error(
    capsys: pytest.CaptureFixture[str], password: str, shown: str
) -> None:
    """The URL's password is starred; the error stays readable and gives no short password away."""
    url = f"postgresql://forwarder:{password}@127.0.0.1:1/outbox"
    code, _, err = run(capsys, "status", "--database-url", url)
    assert code == 1
    assert "postgresql://forwarder:***@127.0.0.1:1/outbox" in err
    assert shown in err and "***27" not in err and "postgre***" not in err


def test_an_unknown_option_shows_the_command_usage(capsys: pytest.CaptureFixture[str]) -> None:
    """An option a command does not take is reported with that command's usage line."""
    with pytest.raises(SystemExit) as done:
        cli.main(["status", "--bogus"])
    assert done.value.code == 2
    err = capsys.readouterr().err
    assert "usage: forwarder status" in err and "unrecognized arguments: --bogus" in err


def test_a_closed_pipe_ends_a_command_quietly(db_path: Path) -> None:
    """`forwarder inspect ... | head -1` prints no traceback when head stops reading."""
    from forwarder.store.sqlite import migrate_sync  # noqa: PLC0415

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
