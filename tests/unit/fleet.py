"""A simulated local deployment for the canary controller: two services behind Envoy, on
a clock that moves only when the controller sleeps.

Each service exposes the metric names and label sets the real one does (`serving/service.py`),
through prometheus_client, and in shadow mode both append prediction-log records with the
request id the proxy gave them, so the controller's own parsing, windows, gates and pairing
run unchanged. The proxy's statistics come in Envoy's names and labels, so the controller's
reading of them runs unchanged too. Only time, processes and the registry are simulated.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from shipyard.deploy import deployment, proxy
from shipyard.deploy.canary import Plant
from shipyard.deploy.state import DeploymentState, Proxy, Variant
from shipyard.errors import GateFailed, ShipyardError
from shipyard.serving.buckets import LATENCY_BUCKETS, reference_bounds

RATE = 300  # client requests per simulated second, split by the proxy's weight
_LATENT = np.random.default_rng(0).normal(-4.6, 1.2, 200_000)
HONEST_THRESHOLD = float(np.quantile(1 / (1 + np.exp(-_LATENT)), 0.99))
SCORE_BUCKETS = reference_bounds(1 / (1 + np.exp(-_LATENT)))


@dataclass(frozen=True)
class Behaviour:
    """How one version answers: its scores as a function of each request's true log-odds."""

    logit: Callable[[np.ndarray], np.ndarray] = lambda z: z
    threshold: float = HONEST_THRESHOLD
    error_rate: float = 0.0
    latency_s: float = 0.004
    refused: float = 0.0  # share of connections refused: the service itself counts none

    def answer(self, z: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """(scores, server error?) for the requests with true log-odds `z`."""
        noise = rng.normal(0, 0.05, len(z))  # a retrain on the same data is not identical
        scores = 1 / (1 + np.exp(-(self.logit(z) + noise)))
        return scores, rng.random(len(z)) < self.error_rate

    def refuses(self, n: int, rng: np.random.Generator) -> np.ndarray:
        return rng.random(n) < self.refused


HONEST = Behaviour()
FAULTS: dict[str, Behaviour] = {
    "diverged": Behaviour(error_rate=0.2),
    "crashing": Behaviour(refused=0.3),
    "slow": Behaviour(latency_s=0.4),
    "collapsed": Behaviour(logit=lambda z: np.full_like(z, -4.0)),
    "shrunk": Behaviour(logit=lambda z: z - 2.0, threshold=HONEST_THRESHOLD / 7),
    "inflated": Behaviour(logit=lambda z: z + 2.0, threshold=0.5),
    "silent": Behaviour(threshold=1.01),
    "noisy": Behaviour(threshold=float(np.quantile(1 / (1 + np.exp(-_LATENT)), 0.9))),
    "segment": Behaviour(logit=lambda z: np.where(z > -4.6, z + 3.0, z)),
}


class Service:
    """One simulated `bentoml serve`: its own metrics registry and its own log file."""

    def __init__(self, version: str, behaviour: Behaviour, log: Path) -> None:
        self.version, self.behaviour = version, behaviour
        self.registry = CollectorRegistry()
        labels = {"model_name": "m", "model_version": version}
        self.requests = Counter(
            "shipyard_http_requests", "", ["path", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "shipyard_http_request_duration_seconds",
            "",
            ["path"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.scores = Histogram(
            "shipyard_prediction_score",
            "",
            list(labels),
            buckets=SCORE_BUCKETS,
            registry=self.registry,
        ).labels(**labels)
        self.predictions = Counter(
            "shipyard_predictions", "", list(labels), registry=self.registry
        ).labels(**labels)
        self.positives = Counter(
            "shipyard_positive_decisions", "", list(labels), registry=self.registry
        ).labels(**labels)
        self.log = log / f"predictions-sim-{version}.jsonl"

    def serve(self, ids: list[str], z: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Answer; returns which requests got a server error."""
        scores, errors = self.behaviour.answer(z, rng)
        ok = ~errors
        self.requests.labels(path="/predict", status="500").inc(int(errors.sum()))
        self.requests.labels(path="/predict", status="200").inc(int(ok.sum()))
        for _ in range(len(z)):
            self.latency.labels(path="/predict").observe(self.behaviour.latency_s)
        alerts = scores >= self.behaviour.threshold
        for s in scores[ok]:
            self.scores.observe(float(s))
        self.predictions.inc(int(ok.sum()))
        self.positives.inc(int((alerts & ok).sum()))
        now = datetime.now(UTC).isoformat(timespec="milliseconds")
        with self.log.open("a") as out:
            for rid, s, a, good in zip(ids, scores, alerts, ok, strict=True):
                if good:
                    record = {"request_id": rid, "timestamp": now, "model_version": self.version}
                    out.write(json.dumps({**record, "score": float(s), "decision": bool(a)}))
                    out.write("\n")
        return errors

    def scrape(self) -> str:
        return generate_latest(self.registry).decode()


@dataclass
class Fleet:
    """Stable and canary behind a proxy that honours the controller's weight and mode.

    `kill_at` raises KeyboardInterrupt from the clock once simulated time passes it: the
    controller dies mid-step like a killed process, and its state file is what is left.
    """

    stable: Service
    canary: Service
    rng: np.random.Generator = field(default_factory=lambda: np.random.default_rng(1))
    now: float = 0.0
    weight: int = 0
    mode: str = "canary"
    kill_at: float | None = None
    scrape_fails: bool = False
    dead: set[int] = field(default_factory=set)
    routes: list[dict[str, Any]] = field(default_factory=list)
    weights_on_disk: list[int] = field(default_factory=list)
    stopped: list[int] = field(default_factory=list)
    outcomes: list[tuple[str, str]] = field(default_factory=list)
    client_errors: int = 0
    served: int = 0
    # Envoy's counters for the canary: attempts that connected, connections refused,
    # retries on stable (canary mode), mirrored 5xx (shadow).
    at_proxy: dict[str, int] = field(
        default_factory=lambda: {"attempts": 0, "refused": 0, "retries": 0, "mirror_5xx": 0}
    )

    def plant(self) -> Plant:
        return Plant(
            scrape=self._scrape,
            proxy_stats=self._proxy_stats,
            route=self._route,
            stop=self._stop,
            alive=lambda pid: pid not in self.dead,
            sleep=self._sleep,
            clock=lambda: self.now,
            passed=lambda name, version, analysis, policy: self.outcomes.append(
                ("passed", version)
            ),
            rejected=self._rejected,
            aborted=lambda name, version: self.outcomes.append(("aborted", version)),
        )

    def _rejected(
        self, name: str, version: str, failed: str, analysis: dict[str, Any]
    ) -> Exception:
        self.outcomes.append(("rejected", version))
        return GateFailed(f"deploy: {name} version {version} rolled back: canary gate {failed}")

    def _scrape(self, variant: Variant) -> str:
        if self.scrape_fails:
            raise ShipyardError(f"GET {variant.url}/metrics: ReadTimeout 3 times")
        return (self.stable if variant.version == self.stable.version else self.canary).scrape()

    def _proxy_stats(self, state: DeploymentState) -> str:
        cluster, fallback = proxy.canary_clusters(state.live_canary().version)
        c = self.at_proxy
        return "".join(
            f"# TYPE envoy_cluster_{name} counter\nenvoy_cluster_{name}{{{labels}}} {value}\n"
            for name, labels, value in (
                ("upstream_rq_total", f'envoy_cluster_name="{cluster}"', c["attempts"]),
                ("upstream_cx_connect_fail", f'envoy_cluster_name="{cluster}"', c["refused"]),
                ("upstream_rq_retry", f'envoy_cluster_name="{fallback}"', c["retries"]),
                (
                    "upstream_rq_xx",
                    f'envoy_response_code_class="5",envoy_cluster_name="{cluster}"',
                    c["mirror_5xx"],
                ),
            )
        )

    def _route(self, state: DeploymentState, **update: Any) -> None:
        self.routes.append(update)
        # The controller writes the weight it intends before it tells the proxy.
        self.weights_on_disk.append(deployment.load_state(state.model).weight)
        self.weight = update.get("weight", self.weight)
        self.mode = update.get("mode", self.mode)
        if "stable" in update:
            self.stable = self.canary
        if update.get("canary", "") is None:
            self.weight = 0

    def _stop(self, pid: int) -> None:
        self.stopped.append(pid)
        self.dead.add(pid)

    def _canary(self, ids: list[str], z: np.ndarray) -> np.ndarray:
        """The canary's answers as Envoy sees them: a refused connection is a failure the
        service never counted."""
        refused = self.canary.behaviour.refuses(len(ids), self.rng)
        reached = np.flatnonzero(~refused)
        failed = refused.copy()
        failed[reached] = self.canary.serve([ids[i] for i in reached], z[reached], self.rng)
        self.at_proxy["attempts"] += len(reached)
        self.at_proxy["refused"] += int(refused.sum())
        return failed

    def _sleep(self, seconds: float) -> None:
        if self.kill_at is not None and self.now + seconds > self.kill_at:
            self.kill_at = None
            raise KeyboardInterrupt("controller killed")
        n = int(RATE * seconds)
        z = self.rng.choice(_LATENT, n)
        ids = [f"r{self.served + i}" for i in range(n)]
        self.served += n
        if self.mode == "shadow":
            self.client_errors += int(self.stable.serve(ids, z, self.rng).sum())
            errors = self._canary(ids, z)  # mirrored: its answers reach no client
            self.at_proxy["mirror_5xx"] += int(errors.sum())
        else:
            to_canary = self.rng.random(n) < self.weight / 100
            pick = np.flatnonzero(to_canary)
            errors = self._canary([ids[i] for i in pick], z[pick])
            self.at_proxy["retries"] += int(errors.sum())
            rest = np.flatnonzero(~to_canary)
            self.client_errors += int(
                self.stable.serve([ids[i] for i in rest], z[rest], self.rng).sum()
            )
            # Envoy retries a canary's failure on stable, so the client never sees it.
            if errors.any():
                retried = pick[errors]
                self.client_errors += int(
                    self.stable.serve([ids[i] for i in retried], z[retried], self.rng).sum()
                )
        self.now += seconds


STABLE_PID, CANARY_PID, PROXY_PID = 101, 102, 103  # simulated: no real process is touched


def running_state(model: str, strategy: str) -> DeploymentState:
    """A deployment as `deploy` leaves it before its first step (stable v1, canary v2)."""
    return DeploymentState(
        model=model,
        version="2",
        strategy=strategy,
        status="running",
        stable=Variant(version="1", tag="m:v1", port=1, pid=STABLE_PID, log="-"),
        canary=Variant(version="2", tag="m:v2", port=2, pid=CANARY_PID, log="-"),
        proxy=Proxy(port=3, pid=PROXY_PID, folder="-", log="-"),
    )
