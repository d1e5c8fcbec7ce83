"""The one validation `run` and `check` share: settings that are fine alone but wrong together."""

from __future__ import annotations

from dataclasses import dataclass

from forwarder import backoff
from forwarder.credentials import Token
from forwarder.errors import ConfigError
from forwarder.settings import Settings
from forwarder.tiktok.build import BuildOptions
from forwarder.worker import WorkerConfig


@dataclass(frozen=True, slots=True)
class Startup:
    """What a valid set of settings gives the daemon."""

    token: Token
    worker: WorkerConfig
    build: BuildOptions
    #: Things that will not stop the daemon but cost events; printed by `check`, logged by `run`.
    warnings: tuple[str, ...]


def validate(settings: Settings) -> Startup:
    """Check everything `run` needs before it touches the database; raise ConfigError."""
    token = settings.token()
    config = worker_config(settings)
    warnings = []
    if not settings.tiktok_pixel_code:
        warnings.append(
            "TIKTOK_PIXEL_CODE is not set: rows without their own pixel_code will be dead-lettered"
        )
    return Startup(token, config, build_options(settings), tuple(warnings))


def worker_config(settings: Settings) -> WorkerConfig:
    """Translate the settings into the worker's configuration; raise ConfigError."""
    if settings.lease < 2 * settings.request_timeout:
        raise ConfigError(
            "FORWARDER_LEASE must be at least twice FORWARDER_REQUEST_TIMEOUT, "
            "or rows would return to pending while their request is still in flight"
        )
    if settings.retention < 2 * 86400:
        raise ConfigError(
            "FORWARDER_RETENTION must be at least 2d: TikTok deduplicates for 48 hours, and the "
            "outbox's unique key must remember an event at least that long"
        )
    if settings.storm_answers >= settings.unknown_code_max_attempts:
        raise ConfigError(
            "FORWARDER_STORM_ANSWERS must be smaller than FORWARDER_UNKNOWN_CODE_MAX_ATTEMPTS, "
            "or a code forwarder does not know, answered to every request, could dead-letter "
            "events before delivery pauses"
        )
    if settings.backoff_max < settings.backoff_initial:
        raise ConfigError(
            "FORWARDER_BACKOFF_MAX must not be smaller than FORWARDER_BACKOFF_INITIAL"
        )
    return WorkerConfig(
        backoff=backoff.BackoffPolicy(
            initial_s=settings.backoff_initial,
            cap_s=settings.backoff_max,
            retry_after_cap_s=settings.retry_after_max,
        ),
        max_events=settings.batch_max_events,
        poll_interval_s=settings.poll_interval,
        lease_s=settings.lease,
        shutdown_grace_s=settings.shutdown_grace,
        unknown_code_max_attempts=settings.unknown_code_max_attempts,
        unknown_code_min_delay_s=settings.unknown_code_min_delay,
        ambiguous_code_max_answers=settings.ambiguous_code_max_answers,
        storm_answers=settings.storm_answers,
        retention_s=settings.retention,
        scrub=not settings.keep_raw_identifiers,
    )


def build_options(settings: Settings) -> BuildOptions:
    """How every event is built, from the settings (also for `enqueue`, `inspect`, `check`)."""
    return BuildOptions(
        default_pixel=settings.tiktok_pixel_code,
        phone_region=settings.phone_region or None,
        consent_default=settings.consent_default,
        max_age_s=settings.max_event_age,
        test_event_code=settings.tiktok_test_event_code or None,
    )
