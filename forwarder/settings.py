"""The daemon's settings, read once from the environment and a ``.env`` file."""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import BeforeValidator, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from forwarder.errors import ConfigError

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_duration(value: object) -> object:
    """Read ``90``, ``90s``, ``250ms``, ``5m``, ``2h`` or ``7d`` as seconds."""
    if isinstance(value, str):
        match = _DURATION.match(value)
        if not match:
            raise ValueError("a duration like 30s, 250ms, 5m, 2h or 7d")
        return float(match.group(1)) * _UNITS[match.group(2) or "s"]
    return value


#: Seconds, written as a number or with a unit (``ms``, ``s``, ``m``, ``h``, ``d``).
Duration = Annotated[float, BeforeValidator(parse_duration), Field(gt=0)]


class Settings(BaseSettings):
    """Every setting of DESIGN.md §5; `.env.example` documents each one."""

    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        frozen=True,
        populate_by_name=False,
    )

    # TikTok.
    tiktok_access_token: SecretStr | None = Field(None, validation_alias="TIKTOK_ACCESS_TOKEN")
    tiktok_access_token_file: Path | None = Field(None, validation_alias="TIKTOK_ACCESS_TOKEN_FILE")
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
        1000, ge=1, le=1000, validation_alias="FORWARDER_BATCH_MAX_EVENTS"
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
    ambiguous_code_max_answers: int = Field(
        3, ge=1, le=1000, validation_alias="FORWARDER_AMBIGUOUS_CODE_MAX_ANSWERS"
    )
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
        if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ValueError("must be host:port, e.g. 127.0.0.1:9464")
        return value

    @field_validator("phone_region")
    @classmethod
    def _region(cls, value: str) -> str:
        value = value.strip().upper()
        if value and not re.fullmatch(r"[A-Z]{2}", value):
            raise ValueError("must be a two-letter ISO 3166 region such as US or GB, or empty")
        return value

    def access_token(self) -> str:
        """Return the token from TIKTOK_ACCESS_TOKEN or the file TIKTOK_ACCESS_TOKEN_FILE names.

        Raises ConfigError, naming the setting and where to put it, when neither holds one.
        """
        if self.tiktok_access_token is not None:
            token = self.tiktok_access_token.get_secret_value().strip()
        elif self.tiktok_access_token_file is not None:
            try:
                token = self.tiktok_access_token_file.read_text(encoding="utf-8").strip()
            except OSError as error:
                raise ConfigError(
                    f"TIKTOK_ACCESS_TOKEN_FILE: cannot read {self.tiktok_access_token_file}: "
                    f"{error.strerror}"
                ) from None
        else:
            token = ""
        if not token:
            raise ConfigError(
                "TIKTOK_ACCESS_TOKEN is not set: put it in .env (copy .env.example) or the "
                "environment, or name a file holding it in TIKTOK_ACCESS_TOKEN_FILE"
            )
        if any(ch.isspace() for ch in token) or token.lower().startswith("bearer"):
            raise ConfigError(
                "TIKTOK_ACCESS_TOKEN must be the bare token: no spaces and no 'Bearer' prefix"
            )
        return token


def store_options(settings: Settings) -> dict[str, bool]:
    """Keyword arguments of open_store() that come from the settings."""
    return {"poll_only": settings.postgres_poll_only}


def load_settings(env_file: str | Path | None = ".env") -> Settings:
    """Read the settings, turning the first validation error into one clear ConfigError."""
    try:
        return Settings(_env_file=env_file)  # type: ignore[call-arg]
    except ValidationError as error:
        first = error.errors()[0]
        name = str(first["loc"][0]) if first["loc"] else "settings"
        # The message, never the input: a mistyped secret must not reach the terminal.
        raise ConfigError(f"{name}: {first['msg']}") from None


def read_token(env_file: str | Path | None = ".env") -> str:
    """Read the access token again, from wherever the settings say it lives (SIGHUP).

    Raises ConfigError, as at start-up, when it cannot be read; the message never holds it.
    """
    return load_settings(env_file).access_token()
