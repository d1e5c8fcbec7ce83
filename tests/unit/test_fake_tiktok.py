"""The fake TikTok refuses to listen anywhere but on loopback, as a class and as a command."""

from __future__ import annotations

import pytest

from forwarder.fake_tiktok import FakeTikTok
from forwarder.fake_tiktok.__main__ import main


def test_non_loopback_host_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    """Both the class and the CLI refuse to listen on a non-loopback address."""
    with pytest.raises(ValueError, match="loopback"):
        FakeTikTok(host="0.0.0.0")
    with pytest.raises(SystemExit) as exited:
        main(["--host", "0.0.0.0"])
    assert exited.value.code == 2
    captured = capsys.readouterr()
    assert "loopback" in captured.err
    assert captured.out == ""
