"""The Grafana dashboard and the alert rules: their PromQL parses and names only our metrics.

promtool comes from Debian's ``prometheus`` package (.ci/run installs it); without it these tests
fail, on purpose, rather than skip.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from forwarder.metrics import Metrics

REPO = Path(__file__).resolve().parent.parent
DASHBOARD = REPO / "deploy" / "grafana" / "forwarder.json"
ALERTS = REPO / "deploy" / "prometheus" / "alerts.yml"
ALERTS_TEST = REPO / "deploy" / "prometheus" / "alerts_test.yml"
PROMETHEUS_EXAMPLE = REPO / "deploy" / "prometheus" / "prometheus.example.yml"

#: Values for Grafana's variables that make each query plain PromQL.
GRAFANA_VALUES = {
    "datasource": "prometheus",
    "job": "forwarder",
    "instance": ".*",
    "__rate_interval": "1m",
    "__interval": "15s",
    "__range": "1h",
}

#: Panels the dashboard must keep (the end-to-end test finds its queries by these titles).
REQUIRED_PANELS = {
    "Delivery rate",
    "Backlog by status",
    "Lag (oldest pending event)",
    "TikTok answers by code",
    "Request duration",
    "Insert-to-delivery latency",
    "Destination paused",
    "Match-key coverage",
    "Batch size",
    "Retried events by reason",
    "Dead-lettered events by reason",
    "Requests in flight vs concurrency limit",
    "Leases rescued",
}

#: Names in PromQL that are neither metrics nor followed by "(": operators and modifiers.
PROMQL_WORDS = frozenset(
    {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring", "atan2"}
    | {"group_left", "group_right", "inf", "nan", "Inf", "NaN"}
)

#: Sample-name suffixes each metric type is exported with (prometheus_client's family names
#: drop a counter's _total and an Info's _info).
SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("", "_sum", "_count", "_created"),
    "info": ("_info",),
}


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


def dashboard() -> dict[str, Any]:
    """The dashboard JSON as Grafana would import it."""
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def all_panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Every panel, including those nested in collapsed rows."""
    for panel in panels:
        yield panel
        yield from all_panels(panel.get("panels", []))


def targets() -> list[tuple[str, str, str]]:
    """(panel title, refId, PromQL with Grafana's variables) of every query in the dashboard."""
    found = []
    for panel in all_panels(dashboard()["panels"]):
        for target in panel.get("targets", []):
            found.append((panel["title"], target["refId"], target["expr"]))
    return found


def panel_query(title: str, ref_id: str = "A", **values: str) -> str:
    """The query *ref_id* of the panel titled *title*, rendered with *values* for variables."""
    for panel_title, ref, expr in targets():
        if (panel_title, ref) == (title, ref_id):
            return render(expr, **values)
    raise AssertionError(f"no query {ref_id} in a panel titled {title!r}")


def render(expr: str, **values: str) -> str:
    """Replace Grafana's $name and ${name} variables by values PromQL accepts."""
    known = {**GRAFANA_VALUES, **values}

    def value(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        if name not in known:
            raise AssertionError(f"unknown Grafana variable ${name} in {expr!r}")
        return known[name]

    return re.sub(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)", value, expr)


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (not functions, labels or keywords)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', '""', expr)
    text = re.sub(r"\{[^{}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # ranges and subqueries
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names = set()
    for match in re.finditer(r"(?<![\w.])[A-Za-z_:][\w:]*", text):
        if match.group() in PROMQL_WORDS or text[match.end() :].lstrip().startswith("("):
            continue  # an operator, or a function or aggregation
        names.add(match.group())
    return names


def exported_names() -> set[str]:
    """Every sample name the daemon's registry can export, children created or not."""
    names = set()
    for family in Metrics().registry.collect():
        names.update(family.name + suffix for suffix in SUFFIXES[family.type])
        assert {sample.name for sample in family.samples} <= names, family.name
    return names


def read_rules(text: str) -> list[dict[str, str]]:
    """The alerting rules of a rules file, each as its scalar fields (alert, expr, for,
    severity, summary, description, ...).

    A reader for the plain YAML subset alerts.yml uses (``key: value``, quoted values and block
    scalars), since the project has no YAML library; promtool validates the file's structure.
    """
    rules: list[dict[str, str]] = []
    lines = text.splitlines()
    index = 0
    while index < len(lines):
        line = lines[index]
        index += 1
        match = re.match(r"^(\s*)(- )?(\w+):\s*(.*?)\s*$", line)
        if line.lstrip().startswith("#") or match is None:
            continue
        indent, key, value = len(match.group(1)), match.group(3), match.group(4)
        if value in {"|", "|-", ">", ">-"}:
            block = []
            while index < len(lines) and (
                not lines[index].strip() or len(lines[index]) - len(lines[index].lstrip()) > indent
            ):
                block.append(lines[index].strip())
                index += 1
            joiner = "\n" if value.startswith("|") else " "
            value = joiner.join(part for part in block if part)
        elif value[:1] in {'"', "'"}:
            value = value[1:-1]
        if key == "alert":
            rules.append({})
        if rules and value:
            rules[-1][key] = value
    return rules


def test_dashboard_is_importable() -> None:
    """The dashboard has a Prometheus datasource variable that every panel and query uses."""
    board = dashboard()
    assert isinstance(board["schemaVersion"], int) and 36 <= board["schemaVersion"] <= 41
    assert board["uid"] and board["title"] and board["id"] is None
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    source = {"type": "prometheus", "uid": "${datasource}"}
    panels = list(all_panels(board["panels"]))
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in panels:
        assert panel.get("datasource") == source, panel["title"]
        for target in panel.get("targets", []):
            assert target.get("datasource") == source, (panel["title"], target["refId"])
    for name in ("job", "instance"):
        assert variables[name]["datasource"] == source, name


def test_dashboard_has_the_panels() -> None:
    """Every panel the issue asks for is there, with at least one query."""
    titled = {p["title"]: p for p in all_panels(dashboard()["panels"]) if p["type"] != "row"}
    assert set(titled) >= REQUIRED_PANELS, REQUIRED_PANELS - set(titled)
    for title, panel in titled.items():
        assert panel.get("targets"), f"{title} has no query"


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


def test_dashboard_names_only_exported_metrics() -> None:
    """Every metric a dashboard query or variable names is one the daemon exports."""
    exported = exported_names()
    queries = [(f"{title} {ref}", render(expr)) for title, ref, expr in targets()]
    for variable in dashboard()["templating"]["list"]:
        if variable["type"] == "query":
            inner = re.fullmatch(r"label_values\((.+),\s*\w+\)", variable["definition"])
            assert inner is not None, variable["definition"]
            queries.append((f"${variable['name']}", render(inner.group(1))))
    for where, query in queries:
        names = metric_names(query)
        assert names, f"{where} names no metric: {query}"
        assert names <= exported, f"{where} names {sorted(names - exported)}, not exported"


def test_metric_names_reader() -> None:
    """The name reader skips functions, labels, strings, ranges, grouping and keywords."""
    query = (
        'sum by (key) (rate(a_total{job=~"$x", le="1e3"}[5m] offset 1m)) / ignoring (key) '
        "group_left () histogram_quantile(0.9, b_bucket) and on () vector(1e3) > bool 2"
    )
    assert metric_names(query) == {"a_total", "b_bucket"}


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


def test_every_alert_is_explained_and_tested() -> None:
    """Each alert has a summary, a description and a severity, names only our metrics (or up),
    and alerts_test.yml checks it both firing and quiet."""
    rules = read_rules(ALERTS.read_text())
    expected = {
        "ForwarderDown",
        "ForwarderMetricsAbsent",
        "ForwarderDeliveryStopped",
        "ForwarderLagHigh",
        "ForwarderDestinationPaused",
        "ForwarderPixelHeld",
        "ForwarderDeadLetters",
        "ForwarderHighRejectionRatio",
    }
    assert {rule["alert"] for rule in rules} == expected
    exported = exported_names() | {"up"}
    checks = re.findall(
        r"alertname: (\w+)\n\s+exp_alerts:( \[\])?", ALERTS_TEST.read_text(), flags=re.M
    )
    for rule in rules:
        name = rule["alert"]
        assert len(rule.get("summary", "")) > 20, f"{name} needs a summary"
        assert len(rule.get("description", "")) > 100, f"{name} needs a description"
        assert rule.get("severity") in {"critical", "warning"}, name
        assert metric_names(rule["expr"]) <= exported, name
        assert (name, "") in checks, f"alerts_test.yml never expects {name} to fire"
        assert (name, " []") in checks, f"alerts_test.yml never expects {name} to stay quiet"
    paused = next(rule for rule in rules if rule["alert"] == "ForwarderDestinationPaused")
    for hint in ("40105", "/etc/forwarder/tiktok-access-token", "forwarder status"):
        assert hint in paused["description"], hint


def test_prometheus_example_config(tmp_path: Path) -> None:
    """promtool check config accepts prometheus.example.yml, with its rule file at hand."""
    text = PROMETHEUS_EXAMPLE.read_text()
    assert '"127.0.0.1:9464"' in text and "job_name: forwarder" in text
    shutil.copy(ALERTS, tmp_path / "forwarder-alerts.yml")
    config = tmp_path / "prometheus.yml"
    config.write_text(text.replace("/etc/prometheus/forwarder-alerts.yml", "forwarder-alerts.yml"))
    result = run_promtool("check", "config", str(config))
    assert result.returncode == 0, result.stdout + result.stderr
