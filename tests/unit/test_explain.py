"""Ranking drifted features by the quality their drift costs: a feature the model reads
explains a drop, one it ignores does not, however far it moved."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
import pytest

from shipyard.monitoring import report
from shipyard.monitoring.estimate import Estimate, for_window
from shipyard.monitoring.explain import Impact, rank

BUDGET = 0.01


def model(rows: pd.DataFrame) -> np.ndarray:
    """Reads x1 only: x2 is a feature it was given and learnt to ignore."""
    return np.asarray(1.0 / (1.0 + np.exp(-(3.0 * rows["x1"].to_numpy() - 5.0))))


def rows(n: int, seed: int, x1_shift: float = 0.0, x2_shift: float = 0.0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({"x1": rng.normal(x1_shift, 1.0, n), "x2": rng.normal(x2_shift, 1.0, n)})
    frame["score"] = model(frame)
    frame["label"] = (rng.random(n) < frame["score"]).astype(int)
    return frame


@pytest.fixture(scope="module")
def reference() -> pd.DataFrame:
    return rows(30_000, seed=1)


def estimator(reference: pd.DataFrame) -> Callable[[np.ndarray], Estimate]:
    return lambda scores: for_window(reference, "label", scores, BUDGET, 500)


def summary(drifted: list[str], impacts: list[Impact]) -> dict[str, object]:
    return {
        "drifted_features": drifted,
        "explained": [{**i.__dict__, "text": i.describe()} for i in impacts],
    }


def test_the_feature_the_model_reads_explains_the_drop_not_the_one_that_moved_most(
    reference: pd.DataFrame,
) -> None:
    window = rows(20_000, seed=2, x1_shift=-0.7, x2_shift=3.0)  # x2 moved far more
    impacts = rank(["x2", "x1"], window, reference, model, estimator(reference))
    assert [i.feature for i in impacts] == ["x1", "x2"]
    x1, x2 = impacts
    assert x1.gain is not None and x1.gain > 0.1
    assert x2.gain == pytest.approx(0.0, abs=1e-9)  # the model never reads it
    header = report.explained_text(summary(["x1", "x2"], impacts))
    assert header.startswith("x1 (estimated average precision +0.") and "x2" not in header


def test_an_honest_window_loses_nothing_to_its_noise(reference: pd.DataFrame) -> None:
    (x1,) = rank(["x1"], rows(20_000, seed=3), reference, model, estimator(reference))
    assert x1.gain is not None and abs(x1.gain) < 0.03
    free = [Impact("x1", -0.01)]  # undoing it would lower the estimate: it cost nothing
    assert report.explained_text(summary(["x1"], free)) == (
        "none of the 1 drifted features costs estimated quality"
    )


def test_without_an_estimate_nothing_is_ranked_by_a_number(reference: pd.DataFrame) -> None:
    small = rows(100, seed=4, x1_shift=-0.7)  # below min_rows: no estimate
    (x1,) = rank(["x1"], small, reference, model, estimator(reference))
    assert x1.gain is None and x1.describe() == "x1 (not estimated)"
    not_judged = {
        "drifted_features": ["x1"],
        "estimated_quality": {"not_judged": "100 rows, fewer than 500"},
    }
    assert report.explained_text(not_judged) == (
        "not ranked (100 rows, fewer than 500); drifted: x1"
    )
    assert report.explained_text({"drifted_features": []}) == "no feature drifted"
    assert report.explained_text({}) == "not judged"
