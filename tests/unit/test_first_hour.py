"""The first hour of a newcomer and an operator, read from the files and settings: the env
files, the token's places, help that teaches, a README that stands alone.

The commands on real SQLite files are in tests/integration/test_first_hour.py; set-up, `make try`,
`make demo` and the daemon as processes in tests/e2e/test_first_hour.py.
"""

from __future__ import annotations

import re
import stat
from pathlib import Path

import pytest

from forwarder import cli, credentials
from forwarder.errors import ConfigError
from forwarder.settings import Settings, load_settings
from tests.support.repo import ROOT, UNIT, example_lines, unit_settings

ALIASES = sorted(
    str(field.validation_alias)
    for field in Settings.model_fields.values()
    if field.validation_alias != "CREDENTIALS_DIRECTORY"
)


# --- 1. make test sets up what it needs ---------------------------------------------------------


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


def test_a_bad_value_from_an_env_file_names_the_file(tmp_path: Path) -> None:
    """A placeholder left in a copied .env is reported with the file it came from."""
    env_file = tmp_path / ".env"
    env_file.write_text("TIKTOK_PIXEL_CODE=<your pixel code>\n")
    with pytest.raises(ConfigError) as raised:
        load_settings(env_file)
    assert str(raised.value).startswith(f"TIKTOK_PIXEL_CODE (set in {env_file}): must be")


def test_token_file_mode_check_uses_group_and_other_bits(tmp_path: Path) -> None:
    """Mode 0600 and 0400 pass; the check reads group and other read bits only."""
    for mode in (0o600, 0o400):
        path = _token_file(tmp_path, b"tok-1", mode)
        assert credentials.read_token(None, path, None).value == "tok-1"
        assert not stat.S_IMODE(path.stat().st_mode) & 0o044


def test_an_unknown_option_shows_the_command_usage(capsys: pytest.CaptureFixture[str]) -> None:
    """An option a command does not take is reported with that command's usage line."""
    with pytest.raises(SystemExit) as done:
        cli.main(["status", "--bogus"])
    assert done.value.code == 2
    err = capsys.readouterr().err
    assert "usage: forwarder status" in err and "unrecognized arguments: --bogus" in err
