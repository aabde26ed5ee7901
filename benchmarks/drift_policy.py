"""Claims about the default drift policy (monitoring/policy.yaml) on the default world:

1. False alarms: share of stationary one-day windows judged drifted, and retrain triggers,
   over the days right after the training data.
2. Detection delay: windows from the start of the simulator's drift scenario to the trigger.

Each window is judged as `shipyard drift check` judges it (live features with history, the
registered model's scores, Evidently on the window against the version's reference), in one
process and without HTTP, so many windows take seconds. Run after `make pipeline`, which
registers the version judged here: `.venv/bin/python -m benchmarks.drift_policy`.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from shipyard import registry, tracking
from shipyard.config import load_params
from shipyard.data.bootstrap import DEFAULT_DAYS
from shipyard.data.replay import live_features
from shipyard.data.simulator import Drift, Simulator
from shipyard.monitoring.drift import judge
from shipyard.monitoring.policy import load_monitoring_policy
from shipyard.monitoring.reference import load_reference
from shipyard.monitoring.trigger import TRIGGER, Verdict, decide

ROOT = Path(__file__).resolve().parents[1]
SCENARIO = Drift(amount_inflation=1.6, new_terminal_share=0.4, night_fraud_share=0.05)
CALM_DAYS = 12
DRIFT_DAYS = 6


def main() -> None:
    params = load_params(ROOT / "params.yaml")
    tracking.configure(params.base)
    policy = load_monitoring_policy(ROOT / "monitoring" / "policy.yaml")
    name = params.base.model_name
    version = str(registry.resolve(name, "@candidate").version)
    reference = load_reference(name, version)
    model = registry.load_model(name, version)
    history = pd.read_parquet(ROOT / "artifacts" / "validated" / "data.parquet")
    world = Simulator()
    decisions: list[dict[str, object]] = []
    rows = []
    for i in range(CALM_DAYS + DRIFT_DAYS):
        day = DEFAULT_DAYS + i
        drifted_period = i >= CALM_DAYS
        live = world.period(day, day + 1, SCENARIO if drifted_period else None)
        live["transaction_id"] = live["transaction_id"].astype("Int64")
        features = live_features(history, live, params)
        features["score"] = model.predict_proba(features[reference.features])[:, 1]
        j = judge(reference, features, policy)
        end = (pd.Timestamp("2026-01-01", tz="UTC") + pd.Timedelta(days=i + 1)).isoformat()
        decision = decide(decisions, Verdict(end, True, j.drifted, j.reasons), policy.trigger)
        decisions.append(decision.as_dict())
        rows.append((day, drifted_period, len(features), j.drift_share, j.drifted, decision.code))
        history = pd.concat([history, live], ignore_index=True)  # its labels have arrived
    print(f"default drift policy on v{version}, one-day windows of the default world")
    print(f"  {'day':>4} {'period':<9} {'rows':>6} {'drift share':>11} {'drifted':>8} {'exit':>5}")
    for day, drifted_period, n, share, drifted, code in rows:
        period = "drift" if drifted_period else "calm"
        print(f"  {day:>4} {period:<9} {n:>6} {share:11.2f} {drifted!s:>8} {code:>5}")
    calm = [r for r in rows if not r[1]]
    drift = [r for r in rows if r[1]]
    false_alarms = sum(r[4] for r in calm)
    calm_triggers = sum(r[5] == TRIGGER for r in calm)
    first = next((k for k, r in enumerate(drift) if r[5] == TRIGGER), None)
    print(
        f"false alarms: {false_alarms}/{len(calm)} calm windows judged drifted, "
        f"{calm_triggers} triggers (goal: 0 triggers)"
    )
    delay = f"{first + 1} windows" if first is not None else f"no trigger in {len(drift)}"
    print(f"detection delay: trigger at drifted window {delay} (policy: 2 of 3)")
    drift_triggers = sum(r[5] == TRIGGER for r in drift)
    print(
        f"triggers during the {len(drift)}-window drift: {drift_triggers} "
        f"(cooldown {policy.trigger.cooldown} of window time; these windows are a day apart)"
    )


if __name__ == "__main__":
    main()
