"""The Grafana dashboard and the alert rules as files: their queries, rendered, and their rules."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

from .repo import ROOT

DASHBOARD = ROOT / "deploy" / "grafana" / "forwarder.json"
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
ALERTS_TEST = ROOT / "deploy" / "prometheus" / "alerts_test.yml"
PROMETHEUS_EXAMPLE = ROOT / "deploy" / "prometheus" / "prometheus.example.yml"

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
