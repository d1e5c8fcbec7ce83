"""The exceptions of forwarder; each one's docstring is its default message."""

from __future__ import annotations


class ForwarderError(Exception):
    """Forwarder failed."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or "").strip())


class ConfigError(ForwarderError):
    """A setting is missing or invalid."""


class StoreError(ForwarderError):
    """The outbox database failed."""


class StoreLost(ForwarderError):
    """The outbox database can no longer be used as opened; the daemon must start again."""


class MigrationError(StoreError):
    """The outbox schema could not be migrated."""


class TransportError(ForwarderError):
    """The request to TikTok did not get an answer."""

    # *kind* is a closed value (``timeout`` or ``connection``): a stored code and a metric
    # label. The message says what happened without the token or any event data.
    def __init__(self, kind: str, message: str | None = None) -> None:
        super().__init__(message)
        self.kind = kind
