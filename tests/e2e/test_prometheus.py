"""End to end with a real Prometheus server scraping a `forwarder run` daemon on loopback.

Prometheus (Debian's ``prometheus`` package, which .ci/run installs) scrapes the daemon every
second and evaluates a copy of alerts.yml whose ``for:`` durations are 0s (promtool test rules
covers the real timing); the daemon delivers to the in-process fake TikTok.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import shutil
import signal
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import pytest

from forwarder.fake_tiktok import FakeTikTok
from tests.support.daemon import FORWARDER, daemon_env, free_port, insert_rows, migrated
from tests.support.dashboard import ALERTS, panel_query, read_rules, render, targets
from tests.support.rows import purchase, statuses

T = TypeVar("T")

JOB = "forwarder"  # the job name alerts.yml selects
RATE_WINDOW = "30s"  # stands in for Grafana's $__rate_interval at a 1 s scrape interval


def prometheus_binary() -> str:
    """The Prometheus server binary, or a test failure saying how to install it."""
    path = shutil.which("prometheus") or "/usr/bin/prometheus"
    if not Path(path).is_file():
        pytest.fail(
            "the Prometheus server is not installed: run `apt-get install -y prometheus` "
            "(.ci/run installs it in CI)",
            pytrace=False,
        )
    return path


def write_prometheus_config(directory: Path, target: str) -> Path:
    """prometheus.yml scraping *target* every second, with alerts.yml's `for:` set to 0s."""
    rules, rewritten = re.subn(r"^(\s+)for: \S+$", r"\1for: 0s", ALERTS.read_text(), flags=re.M)
    assert rewritten > 0
    (directory / "alerts.yml").write_text(rules)
    config = directory / "prometheus.yml"
    config.write_text(
        "global:\n"
        "  scrape_interval: 1s\n"
        "  scrape_timeout: 1s\n"
        "  evaluation_interval: 1s\n"
        "rule_files:\n"
        "  - alerts.yml\n"
        "scrape_configs:\n"
        f"  - job_name: {JOB}\n"
        "    static_configs:\n"
        f'      - targets: ["{target}"]\n'
    )
    return config


async def stop(process: asyncio.subprocess.Process | None) -> None:
    """SIGTERM *process*, then SIGKILL it if it has not exited within 10 s."""
    if process is None or process.returncode is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        await asyncio.wait_for(process.wait(), 10)
    except TimeoutError:
        process.kill()
        await process.wait()


async def eventually(
    probe: Callable[[], Awaitable[T]],
    accept: Callable[[T], bool],
    what: str,
    timeout: float = 20.0,
) -> T:
    """Poll *probe* until *accept* holds for its result; fail after *timeout* seconds."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        with contextlib.suppress(aiohttp.ClientError):
            last = await probe()
            if accept(last):
                return last
        await asyncio.sleep(0.2)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last seen: {last!r}")


class PrometheusAPI:
    """Prometheus's HTTP API, the way Grafana and an operator use it."""

    def __init__(self, session: aiohttp.ClientSession, url: str) -> None:
        self.session = session
        self.url = url

    async def get(self, path: str, **params: str) -> Any:
        """GET an API path; return its ``data`` after checking the status."""
        async with self.session.get(self.url + path, params=params) as response:
            body = await response.json()
        assert body["status"] == "success", body
        return body["data"]

    async def query(self, expr: str) -> list[dict[str, Any]]:
        """Run an instant query; return its vector."""
        data = await self.get("/api/v1/query", query=expr)
        result: list[dict[str, Any]] = data["result"]
        return result

    async def values(self, expr: str) -> list[float]:
        """The sample values an instant query returns."""
        return [float(item["value"][1]) for item in await self.query(expr)]

    async def alerts(self) -> list[dict[str, Any]]:
        """The alerts pending or firing now."""
        data = await self.get("/api/v1/alerts")
        alerts: list[dict[str, Any]] = data["alerts"]
        return alerts


def firing(alerts: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    """The firing alerts named *name*."""
    return [a for a in alerts if a["labels"]["alertname"] == name and a["state"] == "firing"]


def dashboard(title: str) -> str:
    """A dashboard panel's first query, as Grafana would send it for this job."""
    return panel_query(title, job=JOB, __rate_interval=RATE_WINDOW)


@pytest.mark.timeout(90)
async def test_dashboard_and_paused_alert_through_prometheus(
    tmp_path: Path, db_path: Path, fake: FakeTikTok
) -> None:
    """Prometheus sees the dashboard's delivery rate and lag move, and fires the paused alert."""
    metrics_addr = f"127.0.0.1:{free_port()}"
    prometheus_url = f"http://127.0.0.1:{free_port()}"
    env = daemon_env(db_path, fake, FORWARDER_HTTP_ADDR=metrics_addr)
    await migrated(db_path, env)
    config = write_prometheus_config(tmp_path, metrics_addr)
    daemon = prometheus = None
    with (
        (tmp_path / "forwarder.log").open("wb") as daemon_log,
        (tmp_path / "prometheus.log").open("wb") as prometheus_log,
    ):
        try:
            daemon = await asyncio.create_subprocess_exec(
                *FORWARDER, "run", env=env, stdout=daemon_log, stderr=daemon_log
            )
            prometheus = await asyncio.create_subprocess_exec(
                prometheus_binary(),
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address={prometheus_url.removeprefix('http://')}",
                "--log.level=warn",
                stdout=prometheus_log,
                stderr=prometheus_log,
            )
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
                api = PrometheusAPI(session, prometheus_url)
                await run_scenario(api, db_path, fake)
        except BaseException:
            for log in (daemon_log, prometheus_log):
                log.flush()
            print("forwarder log:\n" + (tmp_path / "forwarder.log").read_text()[-4000:])
            print("prometheus log:\n" + (tmp_path / "prometheus.log").read_text()[-4000:])
            raise
        finally:
            await stop(prometheus)
            await stop(daemon)


async def run_scenario(api: PrometheusAPI, db_path: Path, fake: FakeTikTok) -> None:
    """Deliver two waves, check rate, backlog and lag; then revoke the token and check the alert."""
    up = f'up{{job="{JOB}"}}'
    await eventually(lambda: api.values(up), lambda v: v == [1.0], "Prometheus scraping the daemon")

    # A counter's first sample is not an increase: a first wave creates the series, and only
    # a second one, seen by a later scrape, makes the delivery rate positive.
    delivered = f'sum(forwarder_events_delivered_total{{job="{JOB}"}})'
    insert_rows(db_path, [purchase(i) for i in range(20)])
    await eventually(lambda: api.values(delivered), lambda v: v == [20.0], "20 delivered")
    insert_rows(db_path, [purchase(i) for i in range(20, 60)])
    rate = await eventually(
        lambda: api.query(dashboard("Delivery rate")),
        lambda r: len(r) == 1 and float(r[0]["value"][1]) > 0,
        "a positive delivery rate",
    )
    assert rate[0]["metric"] == {"event": "Purchase"}

    # The outbox gauges are refreshed together, at most every 10 s: once a scrape shows all 60
    # sent, the same scrape shows nothing pending, so the lag is exactly 0.
    sent = f'sum(forwarder_outbox_events{{job="{JOB}", status="sent"}})'
    await eventually(lambda: api.values(sent), lambda v: v == [60.0], "60 sent", timeout=25)
    assert await api.values(dashboard("Lag (oldest pending event)")) == [0.0]
    backlog = {
        item["metric"]["status"]: float(item["value"][1])
        for item in await api.query(dashboard("Backlog by status"))
    }
    assert backlog == {"pending": 0.0, "inflight": 0.0, "dead": 0.0}
    assert firing(await api.alerts(), "ForwarderDestinationPaused") == []

    # A revoked token: TikTok answers 40105, the daemon pauses, events wait, the lag grows.
    fake.token = "revoked-token"
    inserted = time.time()
    insert_rows(db_path, [purchase(i) for i in range(60, 70)])
    alerts = await eventually(
        api.alerts,
        lambda a: bool(firing(a, "ForwarderDestinationPaused")),
        "the ForwarderDestinationPaused alert firing",
    )
    labels = firing(alerts, "ForwarderDestinationPaused")[0]["labels"]
    assert labels["reason"] == "40105"
    assert labels["job"] == JOB and labels["severity"] == "critical"
    assert fake.answers[40105] >= 1
    lag = await eventually(
        lambda: api.values(dashboard("Lag (oldest pending event)")),
        lambda v: len(v) == 1 and v[0] > 0,
        "a positive lag while paused",
        timeout=25,
    )
    assert lag[0] <= time.time() - inserted + 1
    counts = statuses(db_path)  # a probe may hold one row inflight for a moment
    assert counts.pop("sent") == 60 and counts.get("dead") is None
    assert counts.get("pending", 0) + counts.get("inflight", 0) == 10

    # Prometheus itself parsed the rules: all evaluate cleanly and carry both annotations.
    groups = (await api.get("/api/v1/rules"))["groups"]
    loaded = [rule for group in groups for rule in group["rules"]]
    assert {rule["name"] for rule in loaded} == {
        rule["alert"] for rule in read_rules(ALERTS.read_text())
    }
    for rule in loaded:
        assert rule["health"] == "ok", (rule["name"], rule.get("lastError"))
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], rule["name"]

    # Every dashboard query runs against real data without an evaluation error.
    for title, ref, expr in targets():
        query = render(expr, job=JOB, __rate_interval=RATE_WINDOW, __range="5m")
        assert isinstance(await api.query(query), list), (title, ref)
