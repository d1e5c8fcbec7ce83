"""Secrets in the settings: the HTTP endpoint is loopback-only by default, the token never travels
in clear off loopback, and no setting switches TLS verification off."""

from __future__ import annotations

import pytest

from forwarder.errors import ConfigError
from forwarder.settings import Settings, load_settings
from tests.support.repo import ROOT

# --- Where the daemon listens ------------------------------------------------------------------


def test_http_endpoint_defaults_to_loopback() -> None:
    """/metrics, /healthz and /readyz listen on loopback unless told otherwise."""
    default = Settings.model_fields["http_addr"].default
    host = default.rpartition(":")[0]
    assert host in ("127.0.0.1", "[::1]", "localhost"), default
    assert load_settings(None).http_addr == default


# --- TLS towards TikTok --------------------------------------------------------------------------


def test_no_setting_turns_tls_verification_off() -> None:
    """No setting names certificate verification, and the client never disables it."""
    names = {*Settings.model_fields, *(f.validation_alias for f in Settings.model_fields.values())}
    words = ("verify", "insecure", "ssl", "tls", "cert", "ca_")
    assert not [n for n in names if isinstance(n, str) and any(w in n.lower() for w in words)]
    source = "\n".join(p.read_text() for p in ROOT.glob("forwarder/**/*.py"))
    for disabling in ("ssl=False", "verify_ssl", "CERT_NONE", "check_hostname = False"):
        assert disabling not in source, disabling


@pytest.mark.parametrize(
    "url", ["http://localhost.attacker.example", "http://127.0.0.1.attacker.example"]
)
def test_plain_http_is_refused_off_loopback(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    """Plain-http TIKTOK_API_URL is refused off loopback: the token would travel in clear."""
    monkeypatch.setenv("TIKTOK_API_URL", url)
    with pytest.raises(ConfigError):
        load_settings(None)
