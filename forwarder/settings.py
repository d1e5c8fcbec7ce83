"""The daemon's settings, read once from the environment and a ``.env`` file."""

from __future__ import annotations

import ipaddress
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import phonenumbers
from pydantic import BeforeValidator, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from forwarder import credentials
from forwarder.errors import ConfigError
from forwarder.tiktok.spec import MAX_EVENTS

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _blank_is_unset(value: object) -> object:
    """An empty or blank value (``TIKTOK_ACCESS_TOKEN=`` in an env file) counts as unset."""
    return None if isinstance(value, str) and not value.strip() else value


def parse_duration(value: object) -> object:
    """Read ``90``, ``90s``, ``250ms``, ``5m``, ``2h`` or ``7d`` as seconds."""
    if isinstance(value, str):
        match = _DURATION.match(value)
        if not match:
            raise ValueError("must be a duration like 30s, 250ms, 5m, 2h or 7d")
        return float(match.group(1)) * _UNITS[match.group(2) or "s"]
    return value


_PIXEL = re.compile(r"[A-Za-z0-9_-]{1,64}")

#: Seconds, written as a number or with a unit (``ms``, ``s``, ``m``, ``h``, ``d``).
Duration = Annotated[float, BeforeValidator(parse_duration), Field(gt=0)]


class Settings(BaseSettings):
    """Every setting the daemon reads; `.env.example` and the README's table document each one."""

    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8-sig",  # a byte-order mark some editors write is not a setting
        extra="ignore",
        frozen=True,
        populate_by_name=False,
    )

    # TikTok.
    tiktok_access_token: Annotated[SecretStr | None, BeforeValidator(_blank_is_unset)] = Field(
        None, validation_alias="TIKTOK_ACCESS_TOKEN"
    )
    tiktok_access_token_file: Annotated[Path | None, BeforeValidator(_blank_is_unset)] = Field(
        None, validation_alias="TIKTOK_ACCESS_TOKEN_FILE"
    )
    #: Set by systemd for a unit with LoadCredential=; the token may be one of its files.
    credentials_directory: Annotated[Path | None, BeforeValidator(_blank_is_unset)] = Field(
        None, validation_alias="CREDENTIALS_DIRECTORY"
    )
    tiktok_pixel_code: str = Field("", validation_alias="TIKTOK_PIXEL_CODE")
    tiktok_api_url: str = Field(
        "https://business-api.tiktok.com", validation_alias="TIKTOK_API_URL"
    )
    tiktok_test_event_code: str = Field("", validation_alias="TIKTOK_TEST_EVENT_CODE")

    # Where the outbox lives, and where metrics and health are served.
    database_url: str = Field("sqlite:///forwarder.db", validation_alias="FORWARDER_DATABASE_URL")
    http_addr: str = Field("127.0.0.1:9464", validation_alias="FORWARDER_HTTP_ADDR")
    postgres_poll_only: bool = Field(False, validation_alias="FORWARDER_POSTGRES_POLL_ONLY")

    # Batching and concurrency.
    batch_max_events: int = Field(
        MAX_EVENTS, ge=1, le=MAX_EVENTS, validation_alias="FORWARDER_BATCH_MAX_EVENTS"
    )
    batch_max_bytes: int = Field(
        1_000_000, ge=10_000, le=10_000_000, validation_alias="FORWARDER_BATCH_MAX_BYTES"
    )
    concurrency: int = Field(4, ge=1, le=64, validation_alias="FORWARDER_CONCURRENCY")
    poll_interval: Duration = Field(0.2, validation_alias="FORWARDER_POLL_INTERVAL")
    lease: Duration = Field(60.0, validation_alias="FORWARDER_LEASE")
    request_timeout: Duration = Field(15.0, validation_alias="FORWARDER_REQUEST_TIMEOUT")
    shutdown_grace: Duration = Field(10.0, validation_alias="FORWARDER_SHUTDOWN_GRACE")

    # Retries.
    backoff_initial: Duration = Field(1.0, validation_alias="FORWARDER_BACKOFF_INITIAL")
    backoff_max: Duration = Field(300.0, validation_alias="FORWARDER_BACKOFF_MAX")
    retry_after_max: Duration = Field(600.0, validation_alias="FORWARDER_RETRY_AFTER_MAX")
    throttle_max_pause: Duration = Field(300.0, validation_alias="FORWARDER_THROTTLE_MAX_PAUSE")
    pause_probe_max: Duration = Field(60.0, validation_alias="FORWARDER_PAUSE_PROBE_MAX")
    unknown_code_max_attempts: int = Field(
        5, ge=1, le=1000, validation_alias="FORWARDER_UNKNOWN_CODE_MAX_ATTEMPTS"
    )
    unknown_code_min_delay: Duration = Field(
        60.0, validation_alias="FORWARDER_UNKNOWN_CODE_MIN_DELAY"
    )
    ambiguous_code_max_answers: int = Field(
        3, ge=1, le=1000, validation_alias="FORWARDER_AMBIGUOUS_CODE_MAX_ANSWERS"
    )
    storm_answers: int = Field(3, ge=1, le=1000, validation_alias="FORWARDER_STORM_ANSWERS")
    max_event_age: Duration = Field(7 * 86400.0, validation_alias="FORWARDER_MAX_EVENT_AGE")

    # Personal data.
    consent_default: Literal["granted", "denied"] = Field(
        "granted", validation_alias="FORWARDER_CONSENT_DEFAULT"
    )
    phone_region: str = Field("", validation_alias="FORWARDER_PHONE_REGION")

    # Retention.
    retention: Duration = Field(7 * 86400.0, validation_alias="FORWARDER_RETENTION")
    keep_raw_identifiers: bool = Field(False, validation_alias="FORWARDER_KEEP_RAW_IDENTIFIERS")

    # Logs.
    log_format: Literal["auto", "json", "console"] = Field(
        "auto", validation_alias="FORWARDER_LOG_FORMAT"
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        "info", validation_alias="FORWARDER_LOG_LEVEL"
    )

    @field_validator("tiktok_pixel_code")
    @classmethod
    def _pixel(cls, value: str) -> str:
        value = value.strip()
        if value and not _PIXEL.fullmatch(value):
            raise ValueError(
                "must be the pixel code from TikTok Events Manager (letters and digits, such "
                "as D34FV3JC77U1PDQ72P1G), not a placeholder"
            )
        return value

    @field_validator("tiktok_api_url")
    @classmethod
    def _api_url(cls, value: str) -> str:
        url = urlsplit(value)
        if not url.hostname or url.scheme not in ("https", "http"):
            raise ValueError("must be an https:// URL such as https://business-api.tiktok.com")
        if url.scheme == "http" and not _loopback(url.hostname):
            # The token travels in a header: in clear only to this machine (tests, the demo).
            raise ValueError("must be https:// (plain http is allowed only on loopback)")
        return value.rstrip("/")

    @field_validator("http_addr")
    @classmethod
    def _http_addr(cls, value: str) -> str:
        host, sep, port = value.rpartition(":")
        if not sep:
            raise ValueError("must be host:port, e.g. 127.0.0.1:9464 (port 0 picks a free one)")
        if not port.isdigit():
            raise ValueError(f"the port must be a number, e.g. 127.0.0.1:9464, got {port!r}")
        if int(port) > 65535:
            raise ValueError(f"the port must be between 0 and 65535, got {port}")
        if not host:
            raise ValueError(f"the host is missing: 127.0.0.1:{port} (0.0.0.0 listens everywhere)")
        return value

    @field_validator("phone_region")
    @classmethod
    def _region(cls, value: str) -> str:
        value = value.strip().upper()
        if value and value not in phonenumbers.SUPPORTED_REGIONS:
            raise ValueError(
                "must be a two-letter region that has phone numbers, such as US, GB or DE, or empty"
            )
        return value

    def access_token(self) -> str:
        """Return the token from TIKTOK_ACCESS_TOKEN, TIKTOK_ACCESS_TOKEN_FILE or the systemd
        credential; raise ConfigError naming the place (never the value) when it is wrong."""
        return self.token().value

    def token(self) -> credentials.Token:
        """The token and the place it came from."""
        secret = self.tiktok_access_token
        return credentials.read_token(
            secret.get_secret_value() if secret is not None else None,
            self.tiktok_access_token_file,
            self.credentials_directory,
        )


def store_options(settings: Settings) -> dict[str, bool]:
    """Keyword arguments of open_store() that come from the settings."""
    return {"poll_only": settings.postgres_poll_only}


def load_settings(
    env_file: str | Path | None = ".env", *, database_url: str | None = None
) -> Settings:
    """Read the settings, turning the first validation error into one clear ConfigError.

    *env_file* is read if it exists (a missing ``.env`` is fine); *database_url*, when given
    (``--database-url``), wins over the environment and the file.
    """
    overrides: dict[str, Any] = {}
    if database_url is not None:
        overrides["FORWARDER_DATABASE_URL"] = database_url
    try:
        return Settings(_env_file=env_file, **overrides)  # type: ignore[call-arg]
    except ValidationError as error:
        first = error.errors()[0]
        name = str(first["loc"][0]) if first["loc"] else "settings"
        # The message, never the input: a mistyped secret must not reach the terminal.
        message = str(first["msg"]).removeprefix("Value error, ")
        # Where the value came from, when it was not the environment: a copied .env example.
        where = ""
        if name not in os.environ and env_file is not None and Path(env_file).is_file():
            where = f" (set in {env_file})"
        raise ConfigError(f"{name}{where}: {message}") from None


def read_token(env_file: str | Path | None = ".env") -> str:
    """Read the access token again, from wherever the settings say it lives (SIGHUP).

    Raises ConfigError, as at start-up, when it cannot be read; the message never holds it.
    """
    return load_settings(env_file).access_token()
