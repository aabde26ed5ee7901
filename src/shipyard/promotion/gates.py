"""Promotion gates: pure checks of a challenger against the champion and the policy.

No registry I/O here: `promotion.aliases` gathers the evidence and records the verdict.
"""

from __future__ import annotations

import numpy as np

from shipyard import metrics
from shipyard.gates import GateResult, check_thresholds
from shipyard.policy import AlertVolumeConfig, CalibrationConfig, NoRegressionConfig, Policy
from shipyard.tags import VersionTags


def pipeline_gate(tags: VersionTags) -> GateResult:
    state = tags.pipeline_gates
    return GateResult("pipeline_gates", state == "passed", detail=f"register gates {state}")


def threshold_gates(tags: VersionTags, policy: Policy) -> list[GateResult]:
    p = policy.promotion
    return check_thresholds(
        tags.test_metrics,
        {str(k): v for k, v in p.min.items()},
        {str(k): v for k, v in p.max.items()},
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
