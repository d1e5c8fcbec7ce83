"""systemd, without a socket: the unit file's contract, and how the notifier reads its environment.

The notifier over real sockets is in tests/integration/test_systemd.py; systemd-analyze and the
daemon under a notify socket in tests/e2e/test_systemd.py.
"""

from __future__ import annotations

import os

from forwarder.app import SHUTDOWN_CLOSE_S
from forwarder.notify import Notifier, socket_address, watchdog_timeout
from forwarder.settings import Settings, parse_duration
from forwarder.worker import SHUTDOWN_FINISH_S
from tests.support.repo import UNIT, unit_settings


def test_unit_declares_the_contract() -> None:
    """The unit is Type=notify with a watchdog, runs the documented install path and reads /etc."""
    settings = unit_settings(UNIT.read_text())
    assert settings["Type"] == ["notify"]
    assert settings["NotifyAccess"] == ["main"]
    assert settings["WatchdogSec"] == ["30s"]
    assert settings["Restart"] == ["on-failure"]
    assert settings["ExecStart"] == ["/opt/forwarder/.venv/bin/forwarder run"]
    assert settings["ExecReload"] == ["/bin/kill -HUP $MAINPID"]  # reads the token again
    assert settings["EnvironmentFile"] == ["/etc/forwarder/forwarder.env"]
    assert settings["StateDirectory"] == ["forwarder"]
    assert (
        "FORWARDER_DATABASE_URL=sqlite:////var/lib/forwarder/forwarder.db"
        in (settings["Environment"])
    )
    assert settings["ReadWritePaths"] == ["/var/lib/forwarder"]


def test_stop_timeout_covers_the_shutdown_deadline() -> None:
    """TimeoutStopSec exceeds the shutdown deadline (grace, finish, close) with room to spare."""
    settings = unit_settings(UNIT.read_text())
    stop_s = parse_duration(settings["TimeoutStopSec"][0])
    grace_s = Settings.model_fields["shutdown_grace"].default
    assert isinstance(stop_s, float)
    assert stop_s >= 1.5 * (grace_s + SHUTDOWN_FINISH_S + SHUTDOWN_CLOSE_S)


def test_socket_address_forms() -> None:
    """A path is used as is, @name becomes an abstract address, anything else is refused."""
    assert socket_address("/run/systemd/notify") == "/run/systemd/notify"
    assert socket_address("@forwarder/notify") == "\0forwarder/notify"
    assert socket_address("") is None
    assert socket_address("@") is None
    assert socket_address("vsock:2:1234") is None


def test_unset_socket_is_a_no_op() -> None:
    """Without NOTIFY_SOCKET nothing is sent, nothing is opened and nothing raises."""
    notifier = Notifier.from_env({"WATCHDOG_USEC": "30000000"})
    assert not notifier.enabled
    assert notifier.watchdog_s is None
    assert not notifier.ready("x")
    assert not notifier.watchdog()
    assert not notifier.status("x")
    assert not notifier.stopping()
    notifier.close()


def test_watchdog_pid_must_be_ours() -> None:
    """WATCHDOG_USEC counts only when WATCHDOG_PID is unset or names this process."""
    usec = {"WATCHDOG_USEC": "30000000"}
    assert watchdog_timeout(usec, pid=42) == 30.0
    assert watchdog_timeout({**usec, "WATCHDOG_PID": "42"}, pid=42) == 30.0
    assert watchdog_timeout({**usec, "WATCHDOG_PID": "41"}, pid=42) is None
    assert watchdog_timeout({"WATCHDOG_USEC": "0"}, pid=42) is None
    assert watchdog_timeout({"WATCHDOG_USEC": "soon"}, pid=42) is None
    assert watchdog_timeout({}, pid=42) is None
    notifier = Notifier.from_env(
        {"NOTIFY_SOCKET": "/run/x", **usec, "WATCHDOG_PID": "1"}, pid=os.getpid()
    )
    assert notifier.enabled and notifier.watchdog_s is None
