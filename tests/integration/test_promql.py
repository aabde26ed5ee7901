"""The AnalysisTemplate's PromQL, run by a real Prometheus, gives the local gates' figures.

Two real `bentoml serve` processes (a healthy stable, a collapsed canary), a real Prometheus
scraping both every 250 ms, the same traffic to each. Every gate query, with Argo's args
filled in, must agree with `analysis.judge` on the controller's own scrapes.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest

from shipyard.deploy import processes
from tests.conftest import REPO, empty_store
from tests.integration import exposition
from tests.integration.registry_fixtures import NAME, TARGET, frame, register

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        shutil.which("prometheus") is None and not os.environ.get("CI"),
        reason="prometheus not installed (`make tools`); CI requires it",
    ),
]


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return resp.read().decode()


def _query(port: int, promql: str) -> float:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    body = json.loads(_get(url))
    assert body["status"] == "success", body
    result = body["data"]["result"]
    return float(result[0]["value"][1]) if result else math.nan


@pytest.fixture(scope="module")
def served(
    tmp_path_factory: pytest.TempPathFactory, store_template: Path
) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("promql")
    env = {
        "MLFLOW_TRACKING_URI": empty_store(store_template, tmp),
        "SHIPYARD_RUNTIME_DIR": str(tmp / "runtime"),
        "BENTOML_HOME": str(tmp / "bentoml"),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    from shipyard import bento
    from shipyard.deploy.deployment import start_service
    from shipyard.policy import load_policy

    policy = load_policy(REPO / "registry" / "policy.yaml")
    versions = {"stable": register(tmp), "canary": register(tmp, seed=1, fault="collapsed")}
    # The canary counts its scores in the stable's buckets, as a deployment packages it.
    tags = {"stable": bento.package(NAME, versions["stable"], policy)}
    buckets = bento.served_buckets(tags["stable"])
    tags["canary"] = bento.package(NAME, versions["canary"], policy, buckets)
    services = {role: start_service(NAME, v, tags[role], role) for role, v in versions.items()}
    prom_port = processes.free_port()
    textfiles = _textfiles(tmp, versions["stable"])
    targets = [f"127.0.0.1:{s.port}" for s in services.values()] + [textfiles]
    # Scraped every 250 ms: `increase` extrapolates a count by up to one scrape interval past
    # its last sample, which against a window of a few seconds must stay a few percent.
    config = {
        "global": {
            "scrape_interval": "250ms",
            "scrape_timeout": "250ms",
            "evaluation_interval": "1s",
        },
        "scrape_configs": [{"job_name": "shipyard", "static_configs": [{"targets": targets}]}],
    }
    (tmp / "prometheus.yml").write_text(json.dumps(config))
    prom = processes.start(
        [
            shutil.which("prometheus") or "prometheus",
            f"--config.file={tmp / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{prom_port}",
        ],
        tmp / "prometheus.log",
    )
    try:
        for s in services.values():
            processes.wait_ready(f"{s.url}/readyz", s.pid, Path(s.log))
        processes.wait_ready(f"http://127.0.0.1:{prom_port}/-/ready", prom, tmp / "prometheus.log")
        yield {
            "versions": versions,
            "services": services,
            "prom": prom_port,
            "policy": policy,
            "buckets": buckets,
        }
    finally:
        for pid in [prom, *(s.pid for s in services.values())]:
            processes.stop(pid)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _textfiles(tmp: Path, version: str) -> str:
    """What node_exporter's textfile collector would serve: the drift check's drift.prom and
    the canary's canary-<model>.prom, as their own writers make them."""
    from shipyard.deploy.outcome import export
    from shipyard.monitoring.report import prometheus_text

    summary = {
        "model": NAME,
        "version": version,
        "rows": 2000,
        "corrupt_lines": 0,
        "drift_share": 0.4,
        "score_drift": 0.05,
        "decision": {"drifted": True, "triggered": False, "code": 3},
        "estimated_quality": {
            "average_precision": 0.41,
            "roc_auc": 0.8,
            "precision_at_budget": 0.5,
        },
    }
    text = prometheus_text(summary) + export(NAME, version, "passed").read_text()
    return exposition.serve(lambda: text)


def _predict(services: Iterable[Any], rows: list[dict[Any, Any]]) -> None:
    """Each row to every service, one request each, as a client would."""
    for row in rows:
        for s in services:
            request = urllib.request.Request(
                f"{s.url}/predict",
                json.dumps({"features": row}).encode(),
                {"content-type": "application/json"},
            )
            with urllib.request.urlopen(request, timeout=10) as resp:
                assert resp.status == 200


def _wait_for_scrapes(port: int, n_targets: int) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if _query(port, f'count(shipyard_predictions_total{{model_name="{NAME}"}})') == n_targets:
            return
        time.sleep(0.5)
    raise AssertionError("Prometheus never scraped both services")


def test_gate_queries_agree_with_the_local_analysis(served: dict[str, Any]) -> None:
    from shipyard.deploy.analysis import AlertRateTest, Alerts, judge
    from shipyard.deploy.promql import gate_queries
    from shipyard.deploy.window import parse_metrics, window

    services, prom = served["services"], served["prom"]
    _wait_for_scrapes(prom, 2)
    time.sleep(2)  # a zero-traffic sample first, so `increase` starts from it
    before = {r: _get(f"{s.url}/metrics") for r, s in services.items()}
    rows = frame(n=400, seed=5).drop(columns=TARGET).to_dict("records")
    _predict(services.values(), rows)
    after = {r: _get(f"{s.url}/metrics") for r, s in services.items()}
    time.sleep(3)  # the last counts scraped
    windows = {r: window(parse_metrics(before[r]), parse_metrics(after[r])) for r in services}
    gates = served["policy"].canary.gates
    local = {r.gate: r.value for r in judge(windows["stable"], windows["canary"], gates)}
    local["min_requests"] = windows["canary"].requests
    test = AlertRateTest.of(
        Alerts.of(windows["stable"]), Alerts.of(windows["canary"]), gates.max_positive_rate_ratio
    )
    local["positive_rate_not_higher"] = test.z_more
    local["positive_rate_not_lower"] = test.z_fewer
    local["min_expected_positives"] = test.expected

    versions = served["versions"]
    found, mismatched = {}, []
    for gate in gate_queries(NAME, "2m", gates, 1, served["buckets"]):
        promql = gate["query"].replace("{{args.canary-version}}", versions["canary"])
        promql = promql.replace("{{args.stable-version}}", versions["stable"])
        name = gate["name"].replace("-", "_")
        found[name] = _query(prom, promql)
        # `increase` extrapolates counts towards the window's edges, which a count shows
        # (min_requests) and a ratio of two counts over the same window mostly cancels.
        counts = ("min_requests", "min_expected_positives", "positive_rate_not_higher")
        rel = 0.15 if name in (*counts, "positive_rate_not_lower") else 0.05
        if found[name] != pytest.approx(local[name], rel=rel, abs=0.01):
            mismatched.append(name)
    assert not mismatched, {"prometheus": found, "local": local}
    assert local["max_score_psi"] > gates.max_score_psi  # the collapsed canary really fails


def test_every_dashboard_query_gives_series_on_real_services(served: dict[str, Any]) -> None:
    """The Grafana dashboard's PromQL, `$model` filled in, on what the services, the drift
    check and the canary export: valid, and each panel has data for the version(s) served."""
    from shipyard.monitoring.dashboard import charts

    prom = served["prom"]
    _wait_for_scrapes(prom, 2)
    rows = frame(n=200, seed=6).drop(columns=TARGET).to_dict("records")
    _predict(served["services"].values(), rows)
    time.sleep(3)  # scraped at least twice since: every rate has two samples
    empty = []
    for chart in charts():
        for query in chart.queries:
            promql = query.expr.replace("$model", NAME)
            url = f"http://127.0.0.1:{prom}/api/v1/query?" + urllib.parse.urlencode(
                {"query": promql}
            )
            body = json.loads(_get(url))
            assert body["status"] == "success", (chart.title, promql, body)
            versions = {r["metric"].get("model_version") for r in body["data"]["result"]}
            if chart.source == "service":
                if versions != set(served["versions"].values()):
                    empty.append((chart.title, promql, versions))
            elif not versions:
                empty.append((chart.title, promql, versions))
    assert not empty, empty
