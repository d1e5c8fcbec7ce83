"""promtool checks the dashboard's queries, the alert rules, their unit tests and the example
Prometheus configuration.

promtool comes from Debian's ``prometheus`` package (.ci/run installs it); without it these tests
fail, on purpose, rather than skip.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support.dashboard import (
    ALERTS,
    ALERTS_TEST,
    PROMETHEUS_EXAMPLE,
    REQUIRED_PANELS,
    read_rules,
    render,
    targets,
)


def promtool() -> str:
    """The promtool binary, or a test failure saying how to install it."""
    path = shutil.which("promtool")
    if path is None:
        pytest.fail(
            "promtool is not installed: run `apt-get install -y prometheus` (Debian's package "
            "ships promtool and the server; .ci/run installs it in CI)",
            pytrace=False,
        )
    return path


def run_promtool(*args: str) -> subprocess.CompletedProcess[str]:
    """Run promtool with *args*; return the finished process."""
    return subprocess.run(
        [promtool(), *args], capture_output=True, text=True, timeout=60, check=False
    )


def test_dashboard_queries_parse(tmp_path: Path) -> None:
    """promtool accepts every dashboard query, checked as a recording rule."""
    rules = [
        {"record": f"dashboard:panel_query:{i}", "expr": render(expr)}
        for i, (_, _, expr) in enumerate(targets())
    ]
    assert len(rules) >= len(REQUIRED_PANELS)
    path = tmp_path / "dashboard-rules.yml"
    path.write_text(json.dumps({"groups": [{"name": "dashboard", "rules": rules}]}, indent=2))
    result = run_promtool("check", "rules", str(path))
    numbered = "\n".join(f"{i}: {title} {ref}" for i, (title, ref, _) in enumerate(targets()))
    assert result.returncode == 0, f"{result.stdout}{result.stderr}\nrules:\n{numbered}"


def test_alert_rules_check() -> None:
    """promtool check rules accepts alerts.yml."""
    result = run_promtool("check", "rules", str(ALERTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(read_rules(ALERTS.read_text()))} rules found" in result.stdout


def test_alert_rules_unit_tests() -> None:
    """promtool test rules passes alerts_test.yml: each alert fires and stays quiet on cue."""
    result = run_promtool("test", "rules", str(ALERTS_TEST))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_prometheus_example_config(tmp_path: Path) -> None:
    """promtool check config accepts prometheus.example.yml, with its rule file at hand."""
    text = PROMETHEUS_EXAMPLE.read_text()
    assert '"127.0.0.1:9464"' in text and "job_name: forwarder" in text
    shutil.copy(ALERTS, tmp_path / "forwarder-alerts.yml")
    config = tmp_path / "prometheus.yml"
    config.write_text(text.replace("/etc/prometheus/forwarder-alerts.yml", "forwarder-alerts.yml"))
    result = run_promtool("check", "config", str(config))
    assert result.returncode == 0, result.stdout + result.stderr
