"""The Grafana dashboard and the alert rules: every query and rule names only our metrics.

promtool's own checks of the same files are in tests/e2e/test_promtool.py.
"""

from __future__ import annotations

import re

from forwarder.metrics import Metrics
from tests.support.dashboard import (
    ALERTS,
    ALERTS_TEST,
    REQUIRED_PANELS,
    all_panels,
    dashboard,
    read_rules,
    render,
    targets,
)

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
