"""Label values of forwarder's metrics come from closed sets, whatever TikTok answers."""

from __future__ import annotations

import pytest

from forwarder.metrics import KNOWN_CODES, code_label, pause_label
from forwarder.tiktok.classify import CODE_VERDICTS


def test_every_exact_table_code_is_its_own_label() -> None:
    """Each exact code of the classification table is reported as itself, others as other."""
    for code in CODE_VERDICTS:
        assert code_label(str(code)) == str(code)
    assert code_label("49999") == code_label("51010") == code_label("http_418") == "other"


@pytest.mark.parametrize(
    ("reason", "label"),
    [
        ("40105", "40105"),
        ("40118", "40118"),
        ("ambiguous_40102", "ambiguous_40102"),
        ("config_40002", "config_40002"),
        ("storm_50000", "storm_50000"),
        ("storm_http_503", "storm_http_503"),
        ("storm_timeout", "storm_timeout"),
        ("storm_connection", "storm_connection"),
        ("storm_bad_body", "storm_bad_body"),
        ("storm_51010", "storm_other"),
        ("storm_http_501", "storm_other"),
        ("storm_http_418", "storm_other"),
        ("storm_49999", "storm_unknown"),
        ("storm_40900", "storm_unknown"),
        ("storm_-5", "storm_unknown"),
        ("storm_123456789012", "storm_unknown"),
    ],
)
def test_pause_label(reason: str, label: str) -> None:
    """A storm's reason keeps a known code and folds any other into storm_other or
    storm_unknown; reasons from the table are their own labels."""
    assert pause_label(reason) == label


def test_storm_labels_are_a_closed_set() -> None:
    """However many codes TikTok invents, storm reasons map to at most one label per known
    code plus storm_other and storm_unknown."""
    labels = {pause_label(f"storm_{code}") for code in range(-1000, 100_000)}
    labels |= {pause_label(f"storm_http_{status}") for status in range(100, 600)}
    assert labels <= {f"storm_{code}" for code in KNOWN_CODES} | {"storm_other", "storm_unknown"}
