"""The stages' pure cores run in memory, with no MLflow, no files and no working directory:
what a batch job, a notebook or the demo's skewed version calls."""

from __future__ import annotations

from typing import Any

import pandas as pd
import pytest

from shipyard.config import Params, parse_params
from shipyard.data.simulator import Simulator
from shipyard.pipeline.evaluate import evaluate
from shipyard.pipeline.featurize import featurize
from shipyard.pipeline.register import gate, reference_sample, version_tags
from shipyard.pipeline.train import CandidateRun, TrainingRuns, fit_candidate
from shipyard.schema import field_ranges
from shipyard.tags import TAG, VersionTags


@pytest.fixture(scope="module")
def world() -> pd.DataFrame:
    return Simulator(n_customers=80, n_terminals=100, seed=5).period(0, 90)


@pytest.fixture
def params(raw_params: dict[str, Any]) -> Params:
    raw_params["train"]["candidates"] = {
        name: spec
        for name, spec in raw_params["train"]["candidates"].items()
        if spec["type"] != "torch_mlp"
    }
    return parse_params(raw_params)


def test_fit_score_gate_and_tag_without_any_io(world: pd.DataFrame, params: Params) -> None:
    splits, cols = featurize(world, params)
    target = params.data.target
    models = {
        name: fit_candidate(spec, splits["train"], cols, target, params.base.seed)
        for name, spec in params.train.candidates.items()
    }
    assert len(models) >= 2
    result = evaluate(models, splits, cols, target, params.evaluate)
    assert result.best in models and 0 < result.threshold < 1
    chosen = result.scores[result.best]["validation"][result.select_by]
    assert all(s["validation"][result.select_by] <= chosen for s in result.scores.values())

    summary = result.summary()
    relaxed = params.model_copy(deep=True)
    relaxed.register_.min.clear()
    relaxed.register_.max.clear()
    results = gate(summary["test"], relaxed)

    sample = reference_sample(splits["train"], cols, models[result.best], params)
    runs = TrainingRuns(
        experiment_id="0",
        parent_run_id="parent",
        tags={TAG["git_sha"]: "abc"},
        candidates={
            name: CandidateRun(
                type=spec.type,
                run_id=f"run-{name}",
                model_uri=f"models:/m-{name}",
                model_id=f"m-{name}",
                trusted_types=[],
                fit_seconds=0.1,
            )
            for name, spec in params.train.candidates.items()
        },
    )
    ranges = field_ranges(splits["train"], cols.numeric, params.data.columns)
    tags = version_tags(
        runs, result.best, summary, results, sample, ranges, {TAG["params_hash"]: "p"}, target
    )
    parsed = VersionTags.of(tags)
    assert parsed.candidate == result.best and parsed.label_column == target
    assert parsed.threshold_at_budget == pytest.approx(result.threshold, rel=1e-5)
    assert tags[TAG["reference_uri"]].startswith(f"runs:/run-{result.best}/")
