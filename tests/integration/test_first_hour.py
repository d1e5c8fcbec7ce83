"""The first hour of an operator, in-process on real SQLite files: commands against a service's
env file, read-only commands creating nothing, errors that hide a database password."""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path

import orjson
import pytest

from forwarder.store.sqlite import migrate_sync
from tests.support.commands import run
from tests.support.harness import PIXEL, TOKEN
from tests.support.rows import insert, purchase, query

READ_ONLY = [["status"], ["check"], ["dead", "list"], ["inspect", "order-1"]]


# --- 3. operators run the commands against the service -----------------------------------------


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


# --- 7. the small things ------------------------------------------------------------------------


def test_dead_list_marks_a_cut_reason(
    db_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reason too long for the table ends with an ellipsis; --json keeps it whole."""
    migrate_sync(db_path)
    monkeypatch.setenv("FORWARDER_DATABASE_URL", f"sqlite:///{db_path}")
    insert(db_path, [purchase(1)])
    reason = "TikTok rejected the event (code 40002): " + "x" * 200
    query(db_path, "SELECT 1")
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
