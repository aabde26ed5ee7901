"""Promotion: may this version become @challenger or @champion? Gates, then a decision record.

The gate functions are pure; `promote` does the registry I/O around them. Every decision,
passed or failed, is stored on the version (tags + JSON artifact) and appended to the audit
log, and the alias only moves when every gate passed.
"""

from __future__ import annotations

import getpass
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np

from shipyard import metrics
from shipyard.artifacts import progress
from shipyard.config import AlertVolumeConfig, CalibrationConfig, NoRegressionConfig, Policy
from shipyard.gates import GateResult, check_thresholds

AUDIT_LOG = "audit/promotions.jsonl"
TARGETS = ("challenger", "champion")
CANARY_TAG = "shipyard.canary.result"
STRATEGY_TAG = "shipyard.deploy.strategy"  # how the local deployment exposes a challenger
STRATEGIES = ("canary", "shadow")


@dataclass
class Decision:
    model: str
    version: str
    to: str
    champion: str | None
    gates: list[GateResult] = field(default_factory=list)
    deltas: dict[str, dict[str, float]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(g.passed for g in self.gates)

    def failed_gate(self) -> GateResult | None:
        return next((g for g in self.gates if not g.passed), None)

    def record(self, tags: dict[str, str], actor: str, extra: dict[str, Any]) -> dict[str, Any]:
        return {
            "model": self.model,
            "version": self.version,
            "to": self.to,
            "decision": "passed" if self.passed else "failed",
            "champion_before": self.champion,
            "first_model": self.champion is None,
            "gates": [g.as_dict() for g in self.gates],
            "deltas": self.deltas,
            "notes": self.notes,
            "data_hash": tags.get("shipyard.data_hash", "unknown"),
            "git_sha": tags.get("shipyard.git_sha", "unknown"),
            "actor": actor,
            "time": datetime.now(UTC).isoformat(timespec="seconds"),
            **extra,
        }


def actor() -> str:
    return os.environ.get("SHIPYARD_ACTOR") or getpass.getuser()


def pipeline_gate(tags: dict[str, str]) -> GateResult:
    state = tags.get("shipyard.gates.pipeline", "missing")
    return GateResult("pipeline_gates", state == "passed", detail=f"register gates {state}")


def threshold_gates(tags: dict[str, str], policy: Policy) -> list[GateResult]:
    prefix = "shipyard.metrics.test."
    values = {k.removeprefix(prefix): float(v) for k, v in tags.items() if k.startswith(prefix)}
    p = policy.promotion
    return check_thresholds(
        values, {str(k): v for k, v in p.min.items()}, {str(k): v for k, v in p.max.items()}
    )


def signature_gate(new: dict[str, str], old: dict[str, str], allow_change: bool) -> GateResult:
    """Clients built for the champion's fields must work unchanged with the challenger."""
    if new == old:
        return GateResult("signature", True, detail="same fields and types as the champion")
    added = sorted(set(new) - set(old))
    removed = sorted(set(old) - set(new))
    retyped = sorted(k for k in set(new) & set(old) if new[k] != old[k])
    detail = f"schema change (added {added}, removed {removed}, retyped {retyped})"
    if allow_change:
        return GateResult("signature", True, detail=f"{detail}, allowed by flag")
    return GateResult("signature", False, detail=f"{detail}; pass --allow-schema-change")


def regression_gate(
    y: np.ndarray, new: np.ndarray, old: np.ndarray, cfg: NoRegressionConfig, budget: float
) -> tuple[GateResult, dict[str, float]]:
    """Pass unless the interval says the challenger is worse by more than the tolerance."""
    delta = metrics.paired_bootstrap_delta(
        y,
        new,
        old,
        cfg.metric,
        budget=budget,
        resamples=cfg.resamples,
        confidence=cfg.confidence,
        seed=cfg.seed,
    )
    bound = -cfg.tolerance
    detail = (
        f"{cfg.metric} delta {delta['delta']:+.4f}, {cfg.confidence:.0%} interval "
        f"[{delta['ci_low']:+.4f}, {delta['ci_high']:+.4f}], lower end must be >= {bound:+.4f}"
    )
    gate = GateResult(
        f"no_regression_{cfg.metric}",
        bool(delta["ci_low"] >= bound),
        delta["ci_low"],
        bound,
        ">=",
        detail,
    )
    return gate, delta


def calibration_gate(
    y: np.ndarray, new: np.ndarray, old: np.ndarray, policy: Policy
) -> tuple[GateResult, dict[str, float]]:
    """A proper scoring rule sees scores shrunk or inflated with their order unchanged.

    Same paired bootstrap as the ranking gate, on the relative change of the loss: pass
    unless the interval says the challenger's loss is higher by more than the tolerance.
    """
    cfg: CalibrationConfig = policy.promotion.calibration
    boot = policy.promotion.no_regression
    delta = metrics.paired_bootstrap_delta(
        y,
        new,
        old,
        cfg.metric,
        budget=policy.promotion.alert_budget,
        resamples=boot.resamples,
        confidence=boot.confidence,
        seed=boot.seed,
        relative=True,
    )
    bound = cfg.max_relative_increase
    detail = (
        f"{cfg.metric} {delta['champion']:.5f} -> {delta['challenger']:.5f} "
        f"({delta['delta']:+.1%}), {boot.confidence:.0%} interval "
        f"[{delta['ci_low']:+.1%}, {delta['ci_high']:+.1%}], lower end must be <= {bound:+.1%}"
    )
    gate = GateResult(
        f"no_regression_{cfg.metric}",
        bool(delta["ci_low"] <= bound),
        delta["ci_low"],
        bound,
        "<=",
        detail,
    )
    return gate, delta


def alert_volume_gate(
    new: np.ndarray,
    old: np.ndarray,
    thresholds: tuple[float, float],
    cfg: AlertVolumeConfig,
    budget: float,
    confidence: float = 0.95,
) -> tuple[GateResult, dict[str, float]]:
    """Alerts each model raises on the same rows at its own threshold: the decisions users see.

    A challenger that never alerts, or floods the analysts, fails here even when it ranks
    rows well. It fails when the canary's rate test (`AlertRateTest`, at `confidence`) says
    its alerts lie outside [1/max_ratio, max_ratio] of the champion's and also of the alert
    budget's share of the rows: on drifted data the champion itself can be off budget, and a
    retrain that brings the volume back to the budget must not fail for it. A test, not a
    band on the point ratio: a few dozen alerts on a small test set are noisy counts.
    """
    from shipyard.deploy.analysis import AlertRateTest, Alerts

    n_new, n_old = metrics.alerts(new, thresholds[0]), metrics.alerts(old, thresholds[1])
    budgeted = budget * len(new)
    ratio = n_new / n_old if n_old else (np.inf if n_new else np.nan)
    to_budget = n_new / budgeted
    low, high = 1 / cfg.max_ratio, cfg.max_ratio
    detail = (
        f"challenger {n_new} alerts at {thresholds[0]:.4g}, champion {n_old} at "
        f"{thresholds[1]:.4g}, budget {budgeted:.0f} on {len(new)} rows: ratio {ratio:.3g} "
        f"to the champion, {to_budget:.3g} to the budget; at {confidence:.0%} one must not be "
        f"outside [{low:.3g}, {high:.3g}]"
    )
    rows = float(len(new))
    inside = [
        not AlertRateTest.of(Alerts(rows, ref), Alerts(rows, n_new), high).rejects(confidence)
        for ref in (float(n_old), budgeted)
    ]
    passed = any(inside) and n_new > 0  # a model that never alerts shows nothing works
    record = {
        "challenger": float(n_new),
        "champion": float(n_old),
        "ratio": float(ratio),
        "ratio_to_budget": float(to_budget),
        "challenger_threshold": thresholds[0],
        "champion_threshold": thresholds[1],
        "rows": float(len(new)),
    }
    return GateResult("alert_volume", passed, float(ratio), high, "test", detail), record


def canary_gate(result: str, first_model: bool, force: bool, reason: str | None) -> GateResult:
    """@champion needs a passed canary, except for the very first model or a recorded override.

    `result` is the canary tag as `grant.trusted_value` reads it: a hand-set `passed` without
    a signature that verifies arrives here as `forged`.
    """
    if first_model:
        return GateResult("canary", True, detail="first model: no champion to canary against")
    if result == "passed":
        return GateResult("canary", True, detail="canary passed")
    if force and reason:
        return GateResult("canary", True, detail=f"canary {result}, overridden: {reason}")
    return GateResult(
        "canary", False, detail=f"canary {result}; needs a passed canary or --force --reason"
    )


# --- registry I/O around the gates ------------------------------------------------------


def _frozen_test_scores(
    name: str, version: str, champion: str, tags: dict[str, str], target: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Both models on the version's frozen test set: the same rows, the same labels."""
    import tempfile
    from pathlib import Path

    import pandas as pd

    from shipyard import registry
    from shipyard.errors import ShipyardError

    if "shipyard.test_uri" not in tags:
        raise ShipyardError(f"{name} version {version}: no frozen test set (tag shipyard.test_uri)")
    with tempfile.TemporaryDirectory(prefix="shipyard-test-") as tmp:
        test = pd.read_parquet(registry.download(tags["shipyard.test_uri"], Path(tmp)))
    fields = {v: list(registry.signature(name, v)) for v in (version, champion)}
    missing = sorted(set(fields[champion]) - set(test.columns))
    if missing:
        raise ShipyardError(
            f"champion version {champion} needs fields {missing} absent from the test set"
        )
    new = registry.load_model(name, version).predict_proba(test[fields[version]])[:, 1]
    old = registry.load_model(name, champion).predict_proba(test[fields[champion]])[:, 1]
    return test[target].to_numpy(), new, old


def decision_tag(action: str) -> str:
    return f"shipyard.promotion.{action}"


def _store(mv: Any, record: dict[str, Any]) -> None:
    """Tags (signed: see `grant`), the JSON record on the run, and a line in the audit log."""
    from shipyard import grant, registry, runtime

    stamp = record["time"].replace(":", "").replace("-", "")
    action = record.get("to", record.get("action", "decision"))
    tag = decision_tag(action)
    tags = grant.stamp(mv, tag, record["decision"], record["time"])
    registry.set_version_tags(mv.name, str(mv.version), {**tags, f"{tag}.actor": record["actor"]})
    registry.log_version_json(mv.run_id, record, f"promotions/{stamp}-{action}.json")
    runtime.append_jsonl(AUDIT_LOG, record)


def promote(
    name: str,
    ref: str,
    to: str,
    policy: Policy,
    target: str,
    *,
    force: bool = False,
    reason: str | None = None,
    allow_schema_change: bool = False,
    evidence: dict[str, Any] | None = None,
    strategy: str | None = None,
) -> dict[str, Any]:
    """Run the gates; on pass move the aliases. Raises GateFailed naming the first failed gate.

    `evidence` (e.g. the canary analysis) is attached to the decision record as it is.
    `strategy` (to challenger only) is how the deployment that follows should expose it.
    """
    from shipyard import bento, grant, registry, runtime
    from shipyard.errors import GateFailed, ShipyardError

    if to not in TARGETS:
        raise ShipyardError(f"promote: --to must be one of {TARGETS}, not {to!r}")
    if force and not reason:
        raise ShipyardError("promote: --force needs --reason, which is recorded")
    if strategy is not None and strategy not in STRATEGIES:
        raise ShipyardError(f"promote: --strategy must be one of {STRATEGIES}, not {strategy!r}")
    if strategy is not None and to != "challenger":
        raise ShipyardError(f"promote: --strategy {strategy} needs --to challenger")
    mv = registry.resolve(name, ref)
    version, tags = str(mv.version), dict(mv.tags)
    holder = registry.version_by_alias(name, registry.CHAMPION)
    champion = str(holder.version) if holder else None
    if to == "champion" and champion == version:
        raise ShipyardError(f"promote: {name} version {version} is already @champion")

    decision = Decision(name, version, to, champion)
    decision.gates.append(pipeline_gate(tags))
    decision.gates += threshold_gates(tags, policy)
    if champion is None:
        decision.notes.append(
            "first model: no champion to compare with; may become champion without a canary"
        )
    elif champion != version:
        sig = signature_gate(
            registry.signature(name, version),
            registry.signature(name, champion),
            allow_schema_change,
        )
        decision.gates.append(sig)
        if sig.passed:
            cfg = policy.promotion.no_regression
            y, new, old = _frozen_test_scores(name, version, champion, tags, target)
            gate, delta = regression_gate(y, new, old, cfg, policy.promotion.alert_budget)
            decision.gates.append(gate)
            decision.deltas[cfg.metric] = delta
            loss, loss_delta = calibration_gate(y, new, old, policy)
            decision.gates.append(loss)
            decision.deltas[f"{policy.promotion.calibration.metric}_relative"] = loss_delta
            thresholds = (
                bento.decision_threshold(policy, tags),
                bento.decision_threshold(policy, dict(holder.tags) if holder else {}),
            )
            volume, counts = alert_volume_gate(
                new,
                old,
                thresholds,
                policy.promotion.alert_volume,
                policy.promotion.alert_budget,
                policy.promotion.no_regression.confidence,
            )
            decision.gates.append(volume)
            decision.deltas["alert_volume"] = counts
    if to == "champion":
        canary = grant.trusted_value(mv, CANARY_TAG)
        decision.gates.append(canary_gate(canary, champion is None, force, reason))
    extra = {"forced": force, "reason": reason, **({"evidence": evidence} if evidence else {})}
    if strategy is not None:
        extra["strategy"] = strategy
    record = decision.record(tags, actor(), extra)

    failed = decision.failed_gate()
    if failed is not None:
        _store(mv, record)
        raise GateFailed(f"promote: {name} version {version} to @{to}: gate {failed.describe()}")
    # Optimistic concurrency: gates were judged against `champion`; commit only if it still holds.
    progress("promote", "gates passed; waiting for the registry lock")
    with runtime.lock(f"registry-{name}"):
        now = registry.version_by_alias(name, registry.CHAMPION)
        current = str(now.version) if now else None
        if current != champion:
            record["decision"] = "failed"
            record["notes"].append(
                f"champion changed from {champion} to {current} during promotion"
            )
            _store(mv, record)
            raise GateFailed(
                f"promote: {name} version {version}: champion changed during promotion "
                f"(was {champion}, now {current}); run it again"
            )
        # The record goes first: the champion guard checks it when the alias event arrives.
        _store(mv, record)
        if to == "challenger":
            # Before the alias: its webhook starts the deployment, which reads this tag.
            registry.set_version_tags(name, version, {STRATEGY_TAG: strategy or "canary"})
            held = registry.version_by_alias(name, registry.CHALLENGER)
            # Setting it again would fire another alias webhook, and deploy.yml, which
            # re-judges the gates, would dispatch itself forever.
            if held is None or str(held.version) != version:
                registry.set_alias(name, registry.CHALLENGER, version)
        else:
            if champion is not None:
                registry.set_alias(name, registry.PREVIOUS, champion)
            registry.set_alias(name, registry.CHAMPION, version)
            challenger = registry.version_by_alias(name, registry.CHALLENGER)
            if challenger is not None and str(challenger.version) == version:
                registry.delete_alias(name, registry.CHALLENGER)
    return record


def rollback(name: str, reason: str) -> dict[str, Any]:
    """Make @previous the champion again, at once; no gate stands in the way of going back."""
    from shipyard import registry, runtime
    from shipyard.errors import ShipyardError

    with runtime.lock(f"registry-{name}"):
        champ = registry.version_by_alias(name, registry.CHAMPION)
        prev = registry.version_by_alias(name, registry.PREVIOUS)
        if prev is None:
            raise ShipyardError(f"rollback: {name} has no @previous version to roll back to")
        record = {
            "model": name,
            "action": "rollback",
            "decision": "passed",
            "version": str(prev.version),
            "replaced": str(champ.version) if champ else None,
            "reason": reason,
            "actor": actor(),
            "time": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        if champ is not None:
            registry.set_version_tags(name, str(champ.version), {"shipyard.rolled_back": reason})
        # The signed record goes first: the champion guard checks it when the alias event arrives.
        _store(prev, record)
        registry.set_alias(name, registry.CHAMPION, str(prev.version))
        registry.delete_alias(name, registry.PREVIOUS)
    return record
