"""Find the TikTok access token (environment, file or systemd credential); never print it."""

from __future__ import annotations

import stat
from dataclasses import dataclass
from pathlib import Path

from forwarder.errors import ConfigError

#: The name of the systemd credential (``LoadCredential=tiktok-access-token:/etc/...``).
CREDENTIAL_NAME = "tiktok-access-token"
_BOM = "\ufeff"
# Access tokens are printable ASCII without spaces; anything else is a copy-paste accident.
_TOKEN_CHARS = frozenset(chr(code) for code in range(0x21, 0x7F))


@dataclass(frozen=True, slots=True)
class Token:
    """The token and where it came from (the place is safe to log; the value never is)."""

    value: str
    source: str


def read_token(env_value: str | None, file: Path | None, credentials_dir: Path | None) -> Token:
    """Return the one token configured, checked; raise ConfigError naming the place otherwise.

    *env_value* is TIKTOK_ACCESS_TOKEN (environment or .env), *file* TIKTOK_ACCESS_TOKEN_FILE,
    *credentials_dir* systemd's CREDENTIALS_DIRECTORY. Empty values count as unset. Two places
    holding a token is an error: which one wins would be a guess.
    """
    credential = credentials_dir / CREDENTIAL_NAME if credentials_dir else None
    if credential is not None and not credential.exists():
        credential = None
    places = [
        name
        for name, present in (
            ("TIKTOK_ACCESS_TOKEN", bool(env_value and env_value.strip())),
            ("TIKTOK_ACCESS_TOKEN_FILE", file is not None),
            (f"the systemd credential {CREDENTIAL_NAME}", credential is not None),
        )
        if present
    ]
    if not places:
        raise ConfigError(
            "TIKTOK_ACCESS_TOKEN is not set: put it in .env (copy .env.example) or the "
            "environment, name a file holding it in TIKTOK_ACCESS_TOKEN_FILE, or give the "
            f"service the systemd credential {CREDENTIAL_NAME}; to try forwarder without a "
            "token, run `make try`"
        )
    if len(places) > 1:
        raise ConfigError(f"the token is set in two places ({' and '.join(places)}): keep one")
    if env_value and env_value.strip():
        return Token(_checked(env_value, "TIKTOK_ACCESS_TOKEN"), "TIKTOK_ACCESS_TOKEN")
    if file is not None:
        return Token(_from_file(file, f"TIKTOK_ACCESS_TOKEN_FILE {file}", private=True), str(file))
    assert credential is not None
    where = f"the systemd credential {credential}"
    # systemd makes the copy readable by the service alone, whatever the source file's mode.
    return Token(_from_file(credential, where, private=False), str(credential))


def _from_file(path: Path, where: str, *, private: bool) -> str:
    try:
        info = path.stat()
        if private and info.st_mode & (stat.S_IRGRP | stat.S_IROTH):
            raise ConfigError(
                f"{where} is readable by other users (mode {stat.S_IMODE(info.st_mode):04o}): "
                f"chmod 600 {path}"
            )
        raw = path.read_bytes()
    except OSError as error:
        raise ConfigError(f"{where}: cannot read it: {error.strerror}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{where} is not UTF-8 text: is it the token file?") from None
    # Some editors start a UTF-8 file with a byte-order mark; it is not part of the token.
    text = text.removeprefix(_BOM)
    if not text.strip():
        raise ConfigError(f"{where} is empty: put the access token in it")
    return _checked(text, where)


def _checked(value: str, where: str) -> str:
    token = value.strip()
    if token.lower().startswith("bearer"):
        raise ConfigError(f"{where}: give the bare token, without the 'Bearer' prefix")
    for position, char in enumerate(token, 1):
        if char not in _TOKEN_CHARS:
            kind = "a space" if char.isspace() else "a control or non-ASCII character"
            raise ConfigError(
                f"{where}: the token holds {kind} at position {position}, which no access "
                "token has: copy it again from TikTok Events Manager"
            )
    return token
