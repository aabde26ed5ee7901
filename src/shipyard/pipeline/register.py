"""register: gate the best candidate on absolute thresholds, then register it as @candidate.

`gate`, `reference_sample` and `version_tags` are the pure core; `run` reads and registers."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pandas as pd

from shipyard import registry, tracking
from shipyard.artifacts import Layout, atomic_dir, progress, read_json, write_json
from shipyard.config import Params
from shipyard.errors import GateFailed
from shipyard.gates import GateResult, check_thresholds, first_failure
from shipyard.lineage import VERSION_SECTIONS, lineage_tags
from shipyard.pipeline.evaluate import CANDIDATES_FILE, METRICS_FILE
from shipyard.pipeline.featurize import FeatureColumns
from shipyard.pipeline.train import TrainingRuns
from shipyard.schema import dump_ranges, field_ranges
from shipyard.serving.buckets import dump_bounds, reference_bounds
from shipyard.tags import TAG, TEST_METRIC_PREFIX

REFERENCE_FILE = "reference.parquet"
REGISTRATION_FILE = "registration.json"
TEST_FILE = "test.parquet"  # the frozen test set promotion compares challenger and champion on


def gate(test_metrics: dict[str, float], params: Params) -> list[GateResult]:
    bounds = params.register_
    results = check_thresholds(
        test_metrics,
        {str(k): v for k, v in bounds.min.items()},
        {str(k): v for k, v in bounds.max.items()},
    )
    failed = first_failure(results)
    if failed is not None:
        raise GateFailed(f"register: gate {failed.describe()}; no version registered")
    return results


def reference_sample(
    train: pd.DataFrame, cols: FeatureColumns, model: Any, params: Params
) -> pd.DataFrame:
    """What drift checks compare live traffic with: training rows, their labels and scores.

    Only rows whose history windows were already full: at serving time every window is, so
    warm-up rows (short counts, no labelled history yet) would read as drift forever.
    """
    data = params.data
    steady = train[train[data.timestamp] >= train[data.timestamp].min() + warm_up(params)]
    if steady.empty:
        progress("register", "training data shorter than the feature warm-up; reference uses all")
        steady = train
    n = min(params.register_.reference_rows, len(steady))
    sample = steady.sample(n=n, random_state=params.base.seed).sort_values(data.timestamp)
    sample = sample[[data.id, data.timestamp, *cols.all, data.target]].reset_index(drop=True)
    sample["score"] = model.predict_proba(sample[cols.all])[:, 1]
    return sample


def warm_up(params: Params) -> pd.Timedelta:
    """How far back the longest history feature looks."""
    cfg, days = params.featurize, 0
    if cfg.spending:
        days = max(days, *cfg.spending.windows_days)
    if cfg.risk:
        days = max(days, cfg.risk.delay_days + max(cfg.risk.windows_days))
    return pd.Timedelta(days=days)


def reference_id(sample: pd.DataFrame) -> str:
    digest = hashlib.sha256(pd.util.hash_pandas_object(sample, index=False).to_numpy().tobytes())
    return digest.hexdigest()[:16]


def version_tags(
    runs: TrainingRuns,
    best: str,
    evaluation: dict[str, Any],
    results: list[GateResult],
    reference: pd.DataFrame,
    ranges: dict[str, tuple[float, float]],
    lineage: dict[str, str],
    label: str,
) -> dict[str, str]:
    """Everything a later step reads off the version: promotion, packaging, serving, drift."""
    tags = {**runs.tags, **lineage}  # train's lineage covers less than this version
    run_id = runs.candidates[best].run_id
    tags.update({f"{TEST_METRIC_PREFIX}{k}": f"{v:.6g}" for k, v in evaluation["test"].items()})
    tags.update({f"shipyard.gate.{r.gate}": r.describe() for r in results})
    tags.update(
        {
            TAG["pipeline_gates"]: "passed",
            TAG["candidate"]: best,
            TAG["pipeline_run_id"]: runs.parent_run_id,
            TAG["reference_id"]: reference_id(reference),
            TAG["reference_uri"]: f"runs:/{run_id}/reference/{REFERENCE_FILE}",
            TAG["test_uri"]: f"runs:/{run_id}/evaluation/{TEST_FILE}",
            TAG["label_column"]: label,
            TAG["threshold_at_budget"]: f"{evaluation['threshold_at_budget']:.6g}",
            TAG["score_buckets"]: dump_bounds(reference_bounds(reference["score"].to_numpy())),
            TAG["field_ranges"]: dump_ranges(ranges),
        }
    )
    return tags


def run(params: Params, layout: Layout) -> None:
    with atomic_dir(layout.registered) as out:  # a failed gate also removes a stale output
        record = register(params, layout, out)
    progress(
        "register", f"{record['model_name']} version {record['version']} is @{record['alias']}"
    )


def register(params: Params, layout: Layout, out: Path) -> dict[str, Any]:
    runs = TrainingRuns.load(layout.models)
    best = read_json(layout.eval / CANDIDATES_FILE)["best"]
    evaluation = read_json(layout.eval / METRICS_FILE)
    results = gate(evaluation["test"], params)
    progress("register", "gates passed: " + "; ".join(r.describe() for r in results))

    cand = runs.candidates[best]
    cols = FeatureColumns.load(layout.features / "features.json")
    train = pd.read_parquet(layout.features / "train.parquet")
    sample = reference_sample(train, cols, runs.load_model(layout.models, best), params)
    sample.to_parquet(out / REFERENCE_FILE, index=False)
    tags = version_tags(
        runs,
        best,
        evaluation,
        results,
        sample,
        field_ranges(train, cols.numeric, params.data.columns),
        lineage_tags(params, VERSION_SECTIONS),
        params.data.target,
    )

    name = params.base.model_name
    tracking.configure(params.base)
    with (
        tracking.pipeline_run("", {}, run_id=runs.parent_run_id),
        tracking.candidate_run(best, {}, run_id=cand.run_id),
    ):
        tracking.log_artifact(out / REFERENCE_FILE, "reference")
        tracking.log_artifact(layout.features / TEST_FILE, "evaluation")
    version = registry.register_version(cand.model_uri, name, cand.run_id, tags)
    registry.set_alias(name, registry.CANDIDATE, version)
    record = {
        "model_name": name,
        "version": version,
        "alias": registry.CANDIDATE,
        "candidate": best,
        "model_uri": cand.model_uri,
        "run_id": cand.run_id,
        "tracking_uri": tracking.tracking_uri(params.base),
        "test": evaluation["test"],
        "gates": [r.as_dict() for r in results],
        "reference_id": tags[TAG["reference_id"]],
    }
    write_json(out / REGISTRATION_FILE, record)
    return record
