"""A challenger judged on the stream: it scored the same events as the live group, in a
shadow group that publishes nothing, and is held to the HTTP canary's model gates.

The live and shadow consumers log each decision under the event's id, so the two logs join
one to one, as the HTTP shadow's do on Envoy's request ids. The same code judges both: the
paired gates (`deploy.paired`) and the score-distribution and alert-rate gates
(`deploy.analysis.model_gates`), counted in the buckets @champion is served with. Latency and
error gates are the HTTP canary's own and have no meaning here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from shipyard.deploy import analysis, paired
from shipyard.deploy.window import Window
from shipyard.gates import GateResult
from shipyard.policy import Policy
from shipyard.runtime import runtime_dir
from shipyard.serving.predlog import read_log


def log_folder(name: str, shadow_version: str | None = None) -> Path:
    """Where `shipyard stream` logs: the live group, or a version's shadow group."""
    role = f"-shadow-v{shadow_version}" if shadow_version else ""
    return runtime_dir() / "predictions" / f"{name}-stream{role}"


def window(scores: np.ndarray, alerts: np.ndarray, bounds: tuple[float, ...]) -> Window:
    """What a variant answered, as a canary window: no requests, latency or errors."""
    cumulative = [float((scores <= b).sum()) for b in bounds] + [float(len(scores))]
    return Window(
        requests=float(len(scores)),
        server_errors=0.0,
        latency_buckets=[],
        score_buckets=list(zip([*bounds, float("inf")], cumulative, strict=True)),
        predictions=float(len(scores)),
        positives=float(alerts.sum()),
    )


@dataclass(frozen=True)
class Verdict:
    results: list[GateResult]
    pairs: int

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.results)

    def analysis(self, stable: str, canary: str) -> dict[str, Any]:
        return {
            "strategy": "stream shadow",
            "stable_version": stable,
            "canary_version": canary,
            "pairs": self.pairs,
            "gates": [r.as_dict() for r in self.results],
        }


def judge(
    records: list[dict[str, Any]],
    stable: str,
    canary: str,
    policy: Policy,
    bounds: tuple[float, ...],
    since: str = "",
) -> Verdict:
    """Every gate, on the events both versions decided at or after `since`."""
    cfg = policy.canary
    s_scores, s_alerts, c_scores, c_alerts = paired.join(records, stable, canary, since)
    found = paired.compare(s_scores, s_alerts, c_scores, c_alerts)
    need = cfg.gates.min_expected_positives
    results = paired.gates(found, cfg.paired, cfg.min_requests, need, final=True)
    results += analysis.model_gates(
        window(s_scores, s_alerts, bounds),
        window(c_scores, c_alerts, bounds),
        cfg.gates,
        final=True,
        budget=policy.promotion.alert_budget,
    )
    return Verdict(results, found.pairs)


def verdict(name: str, ref: str, policy: Policy, since: str = "") -> tuple[str, str, Verdict]:
    """(challenger, champion, verdict): the shadow of `ref` against @champion's live
    decisions, from the two stream logs."""
    from shipyard import bento, registry
    from shipyard.deploy import outcome
    from shipyard.errors import ShipyardError

    challenger, champion = outcome.versions(name, ref)
    records: list[dict[str, Any]] = []
    for folder in (log_folder(name), log_folder(name, challenger)):
        if not folder.is_dir():
            raise ShipyardError(f"{folder}: no stream prediction log (is the consumer running?)")
        found, _ = read_log(folder)
        records += found
    bounds = bento.comparison_buckets(name, registry.resolve(name, challenger))
    return challenger, champion, judge(records, champion, challenger, policy, bounds, since)


def settle(name: str, challenger: str, champion: str, found: Verdict, policy: Policy) -> None:
    """Promote or reject, as the HTTP canary does: the promotion gates still have their say,
    and a rejection tags the version with the failed gate and raises."""
    from shipyard.deploy import outcome

    report = found.analysis(champion, challenger)
    if found.passed:
        outcome.passed(name, challenger, report, policy)
        return
    failed = next(r for r in found.results if not r.passed)
    raise outcome.rejected(name, challenger, failed.describe(), report)
