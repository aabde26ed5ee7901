"""Claims about quality estimated without labels (`shipyard.monitoring.estimate`), on the
default world and the registered version:

1. Accuracy: estimated against realised average precision and ROC AUC per window (a day;
   `WINDOW_DAYS=3` for three), as mean absolute error: stationary windows, two covariate
   shifts (amounts halved; customers moving to new terminals) and a label shift (a new
   night-time fraud pattern the model never saw: P(label | score) changes, which no
   label-free estimate sees).
2. Lead: windows from the start of each shift to the retraining trigger, with the
   estimated-drop condition of `monitoring/policy.yaml` (`quality.max_estimated_drop`) and
   with the label-based one (`quality.max_drop`). Labels arrive `delay_days` after the
   window (params: featurize.risk.delay_days), so the label-based condition can first hold
   then. Both go through the policy's K-of-M trigger on their own; no other drift reason is
   counted, so the two conditions are compared alone.
3. False alarms: stationary windows in which the estimated drop exceeds the bound (goal 0 of
   20), and the largest stationary drop, the margin below the bound.

Every window is scored as `shipyard drift check` sees it (live features with history, the
registered model's scores), in one process. Run after `make pipeline`:
`.venv/bin/python -m benchmarks.estimation`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from shipyard import registry, tracking
from shipyard.config import Params, load_params
from shipyard.data.bootstrap import DEFAULT_DAYS
from shipyard.data.replay import live_features
from shipyard.data.simulator import Drift, Simulator
from shipyard.metrics import quality
from shipyard.monitoring.estimate import Calibration, calibrate, calibrated
from shipyard.monitoring.policy import QualityMetric, TriggerPolicy, load_monitoring_policy
from shipyard.monitoring.reference import Reference, load_reference
from shipyard.monitoring.trigger import TRIGGER, Verdict, decide
from shipyard.policy import load_policy

ROOT = Path(__file__).resolve().parents[1]
STATIONARY_DAYS = 20  # windows, each WINDOW_DAYS long
CALM_DAYS, SHIFT_DAYS = 3, 15  # windows
WINDOW_DAYS = int(os.environ.get("WINDOW_DAYS", "1"))
SCENARIOS = {
    "amounts halved": Drift(amount_inflation=0.5),
    "new terminals": Drift(new_terminal_share=0.6),
    "night fraud": Drift(night_fraud_share=0.05),  # a label shift: P(label | score) moves
}
METRICS = ("average_precision", "roc_auc")


@dataclass
class Context:
    params: Params
    model: Any
    reference: Reference
    calibration: Calibration | str  # fitted once on the reference, as the drift check does
    history: pd.DataFrame  # the training data: live features need the days before
    max_estimated_drop: dict[QualityMetric, float]
    max_drop: dict[QualityMetric, float]
    budget: float
    min_rows: int


@dataclass
class Window:
    day: int
    shifted: bool
    rows: int
    estimated: dict[str, float | None]
    baseline: dict[str, float | None]
    realised: dict[str, float]
    estimated_reasons: list[str]
    realised_reasons: list[str]


def windows(days: int, calm: int, drift: Drift | None, ctx: Context) -> list[Window]:
    """One-day windows right after the training data: `calm` days as they were, then the
    shift (if any)."""
    world, history, out = Simulator(), ctx.history, []
    features_of = ctx.reference.features
    tested = ctx.reference.tags.test_metrics
    for i in range(days):
        day = DEFAULT_DAYS + i * WINDOW_DAYS
        shifted = drift is not None and i >= calm
        live = world.period(day, day + WINDOW_DAYS, drift if shifted else None)
        live["transaction_id"] = live["transaction_id"].astype("Int64")
        features = live_features(history, live, ctx.params)
        scores = ctx.model.predict_proba(features[features_of])[:, 1]
        est = calibrated(ctx.calibration, scores, ctx.budget, ctx.min_rows)
        real = quality(live["tx_fraud"].to_numpy().astype(int), scores, ctx.budget)
        base = est.baseline
        out.append(
            Window(
                day,
                shifted,
                len(live),
                {m: getattr(est, m) for m in METRICS},
                {m: getattr(base, m) if base else None for m in METRICS},
                {m: real[m] for m in METRICS},
                est.drops(ctx.max_estimated_drop),
                [m for m, bound in ctx.max_drop.items() if tested[m] - real[m] > bound],
            )
        )
        history = pd.concat([history, live], ignore_index=True)  # its labels have arrived
    return out


def trigger_window(drifted: list[bool], known_after: int, cfg: TriggerPolicy) -> int | None:
    """The window at which the K-of-M trigger fires when each window's verdict is known
    `known_after` windows after it (0: at once; the label delay for realised quality)."""
    history: list[dict[str, Any]] = []
    start = pd.Timestamp("2026-01-01", tz="UTC")
    for k, flag in enumerate(drifted):
        end = (start + pd.Timedelta(days=(k + 1) * WINDOW_DAYS)).isoformat()
        decision = decide(history, Verdict(end, True, flag), cfg)
        history.append(decision.as_dict())
        if decision.code == TRIGGER:
            return k + known_after
    return None


def mae(rows: list[Window], metric: str) -> float:
    pairs = [(w.estimated[metric], w.realised[metric]) for w in rows]
    return float(np.mean([abs(e - r) for e, r in pairs if e is not None]))


def main() -> None:
    params = load_params(ROOT / "params.yaml")
    tracking.configure(params.base)
    policy = load_monitoring_policy(ROOT / "monitoring" / "policy.yaml")
    name = params.base.model_name
    mv = registry.resolve(name, "@candidate")
    version = str(mv.version)
    reference = load_reference(name, version)
    ctx = Context(
        params=params,
        model=registry.load_model(name, version),
        reference=reference,
        calibration=calibrate(reference.frame, params.data.target),
        history=pd.read_parquet(ROOT / "artifacts" / "validated" / "data.parquet"),
        max_estimated_drop=dict(policy.quality.max_estimated_drop),
        max_drop=dict(policy.quality.max_drop),
        budget=load_policy(ROOT / "registry" / "policy.yaml").promotion.alert_budget,
        min_rows=policy.window.min_rows,
    )
    if not ctx.max_estimated_drop:
        raise SystemExit("estimation: monitoring/policy.yaml sets no quality.max_estimated_drop")
    delay_days = params.featurize.risk.delay_days if params.featurize.risk else 7
    delay = -(-delay_days // WINDOW_DAYS)  # windows until a window's labels are all in
    runs = {"stationary": windows(STATIONARY_DAYS, STATIONARY_DAYS, None, ctx)}
    for label, drift in SCENARIOS.items():
        runs[label] = windows(CALM_DAYS + SHIFT_DAYS, CALM_DAYS, drift, ctx)

    print(f"\nQuality estimated without labels: {name} v{version}, {WINDOW_DAYS}-day windows")
    print(f"  bounds: estimated drop {ctx.max_estimated_drop}, realised {ctx.max_drop}")
    print(f"  labels arrive {delay_days} days after their window ({delay} window(s))\n")
    print(
        f"  {'scenario':<16} {'day':>4} {'rows':>6} {'est AP':>7} {'real AP':>7} "
        f"{'est AUC':>7} {'real AUC':>8}  flags"
    )
    for label, rows in runs.items():
        for w in rows:
            tag = ("shift " if w.shifted else "") + " ".join(
                [f"est:{r.split()[0]}" for r in w.estimated_reasons]
                + [f"real:{m}" for m in w.realised_reasons]
            )
            e_ap, e_auc = w.estimated["average_precision"], w.estimated["roc_auc"]
            print(
                f"  {label:<16} {w.day:>4} {w.rows:>6} {fmt(e_ap):>7} "
                f"{w.realised['average_precision']:7.3f} {fmt(e_auc):>7} "
                f"{w.realised['roc_auc']:8.3f}  {tag}"
            )
    print(
        f"\n  {'scenario':<16} {'MAE AP':>7} {'MAE AUC':>8} {'est trigger':>12} "
        f"{'label trigger':>14} {'lead':>5}"
    )
    for label, rows in runs.items():
        first = CALM_DAYS if label != "stationary" else 0
        est_at = trigger_window([bool(w.estimated_reasons) for w in rows], 0, policy.trigger)
        real_at = trigger_window([bool(w.realised_reasons) for w in rows], delay, policy.trigger)
        both = est_at is not None and real_at is not None and min(est_at, real_at) >= first
        lead = str(real_at - est_at) if both else "-"  # type: ignore[operator]
        print(
            f"  {label:<16} {mae(rows, 'average_precision'):7.3f} {mae(rows, 'roc_auc'):8.3f} "
            f"{after(est_at, first):>12} {after(real_at, first):>14} {lead:>5}"
        )
    calm = runs["stationary"]
    alarms = sum(bool(w.estimated_reasons) for w in calm)
    worst = max(
        (w.baseline[m] or 0) - (w.estimated[m] or 0) for w in calm for m in ctx.max_estimated_drop
    )
    print(
        f"\n  false alarms: estimated drop past its bound in {alarms} of {len(calm)} stationary "
        f"windows (goal 0); largest stationary drop {worst:.3f}"
    )


def fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def after(at: int | None, first: int) -> str:
    if at is None:
        return "none"
    return f"window +{at - first}" if at >= first else "before it"


if __name__ == "__main__":
    main()
