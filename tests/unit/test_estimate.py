"""Quality estimated without labels: close to the realised figures where the calibration
holds, moving with them under covariate shift, never a number on a window too small."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from shipyard.monitoring.estimate import Calibration, estimate
from shipyard.monitoring.policy import QualityMetric

BUDGET = 0.01


def world(
    n: int, seed: int, shift: float = 0.0, link: float = 6.0
) -> tuple[np.ndarray, np.ndarray]:
    """Scores in [0, 1] and labels drawn from P(positive | score), a steep logistic: rare
    positives, as in fraud. `shift` moves the inputs (hence the scores); `link` is how
    P(positive | score) depends on the score, which a concept drift changes."""
    rng = np.random.default_rng(seed)
    latent = rng.normal(-2.5 + shift, 1.0, n)
    scores = 1.0 / (1.0 + np.exp(-latent))
    truth = 1.0 / (1.0 + np.exp(-(link * scores - 5.0)))
    return scores, (rng.random(n) < truth).astype(int)


def realised(scores: np.ndarray, labels: np.ndarray) -> tuple[float, float, float]:
    top = np.argsort(-scores, kind="stable")[: int(np.ceil(BUDGET * len(scores)))]
    return (
        roc_auc_score(labels, scores),
        average_precision_score(labels, scores),
        float(labels[top].mean()),
    )


@pytest.fixture(scope="module")
def calibration() -> Calibration:
    return Calibration.fit(*world(50_000, seed=1))


@pytest.mark.parametrize("shift", [0.0, -0.6, 0.4], ids=["stationary", "fewer-risky", "more-risky"])
def test_the_estimate_follows_the_realised_figures(calibration: Calibration, shift: float) -> None:
    scores, labels = world(40_000, seed=2, shift=shift)
    got = estimate(scores, calibration, BUDGET)
    auc, ap, precision = realised(scores, labels)
    assert got.not_judged is None
    assert got.roc_auc == pytest.approx(auc, abs=0.02)
    assert got.average_precision == pytest.approx(ap, abs=0.03)
    assert got.precision_at_budget == pytest.approx(precision, abs=0.08)


def test_a_covariate_shift_that_costs_quality_shows_before_the_labels(
    calibration: Calibration,
) -> None:
    """Fewer risky inputs: the same model's AP falls, and the estimate falls with it."""
    before = estimate(world(40_000, seed=3)[0], calibration, BUDGET)
    scores, labels = world(40_000, seed=4, shift=-0.8)
    after = estimate(scores, calibration, BUDGET)
    assert before.average_precision is not None and after.average_precision is not None
    assert after.average_precision < before.average_precision - 0.05
    assert after.average_precision == pytest.approx(realised(scores, labels)[1], abs=0.03)


def test_a_concept_drift_is_what_it_cannot_see(calibration: Calibration) -> None:
    """P(positive | score) itself changes: the scores do not move, so neither does the
    estimate, while the realised AP falls. Only labels show this."""
    scores, labels = world(40_000, seed=5, link=3.0)
    got = estimate(scores, calibration, BUDGET)
    stationary = estimate(world(40_000, seed=6)[0], calibration, BUDGET)
    assert got.average_precision == pytest.approx(stationary.average_precision, abs=0.02)
    assert realised(scores, labels)[1] < (got.average_precision or 0) - 0.05


def test_small_or_positive_free_windows_are_not_judged(calibration: Calibration) -> None:
    small = estimate(world(200, seed=7)[0], calibration, BUDGET)
    assert small.roc_auc is None and small.not_judged == "200 rows, fewer than 500"
    quiet = estimate(np.full(5_000, 0.001), calibration, BUDGET)
    assert quiet.roc_auc is None and quiet.not_judged is not None
    assert "expected positives of 5000 rows" in quiet.not_judged


def test_ties_and_non_finite_scores(calibration: Calibration) -> None:
    """One score for every row ranks nothing (AUC 0.5); NaN and inf are not rows."""
    flat = estimate(np.full(5_000, 0.6), calibration, BUDGET)
    assert flat.roc_auc == pytest.approx(0.5)
    scores = world(5_000, seed=8)[0]
    dirty = np.r_[scores, [np.nan, np.inf, -np.inf]]
    assert estimate(dirty, calibration, BUDGET) == estimate(scores, calibration, BUDGET)


def test_a_reference_without_enough_positives_calibrates_nothing() -> None:
    import pandas as pd

    from shipyard.monitoring.estimate import MIN_CALIBRATION_POSITIVES, for_window

    scores, labels = world(20_000, seed=9)
    reference = pd.DataFrame({"score": scores, "tx_fraud": labels})
    live = world(5_000, seed=10)[0]
    assert for_window(reference, "tx_fraud", live, BUDGET, 500).average_precision is not None
    assert for_window(reference, "label", live, BUDGET, 500).not_judged == (
        "the reference has no label column 'label'"
    )
    few = reference.assign(tx_fraud=0)
    few.loc[: MIN_CALIBRATION_POSITIVES - 2, "tx_fraud"] = 1
    got = for_window(few, "tx_fraud", live, BUDGET, 500)
    assert got.average_precision is None and got.not_judged is not None
    assert f"{MIN_CALIBRATION_POSITIVES - 1} positive labels" in got.not_judged


def test_the_estimate_reaches_the_report_header_and_drift_prom() -> None:
    """A number where judged, next to the realised figure; no series where not judged."""
    from dataclasses import asdict

    from shipyard.monitoring import report
    from shipyard.monitoring.estimate import Estimate

    summary = {
        "model": "fd",
        "version": "3",
        "rows": 2000,
        "corrupt_lines": 0,
        "decision": {"drifted": True, "triggered": False, "code": 3},
        "estimated_quality": asdict(Estimate(2000, 0.8, 0.41, 0.5, 21.0)),
        "live_quality": {"average_precision": {"live": 0.39, "test": 0.45, "drop": 0.06}},
    }
    line = report.estimated_text(summary)
    assert line.startswith("average precision 0.410, ROC AUC 0.800")
    assert line.endswith("realised: average precision 0.390")
    text = report.prometheus_text(summary)
    assert 'shipyard_drift_estimated_average_precision{model_name="fd",model_version="3"} 0.41' in (
        text
    )
    summary["estimated_quality"] = asdict(Estimate(40, not_judged="40 rows, fewer than 500"))
    assert report.estimated_text(summary) == "not judged: 40 rows, fewer than 500"
    assert "estimated" not in report.prometheus_text(summary)


def test_a_drop_from_the_reference_estimate_is_a_reason_an_honest_window_is_not() -> None:
    """The trigger condition `quality.max_estimated_drop`: measured from the same estimate on
    the reference's scores, so the estimator's own bias is on both sides."""
    import pandas as pd

    from shipyard.monitoring.estimate import for_window

    scores, labels = world(20_000, seed=11)
    reference = pd.DataFrame({"score": scores, "tx_fraud": labels})
    bound: dict[QualityMetric, float] = {"average_precision": 0.02}  # AP here: about 0.07
    honest = for_window(reference, "tx_fraud", world(20_000, seed=12)[0], BUDGET, 500)
    assert honest.baseline is not None and honest.baseline.average_precision is not None
    assert honest.drops(bound) == []
    fewer_risky = for_window(
        reference, "tx_fraud", world(20_000, seed=13, shift=-0.8)[0], BUDGET, 500
    )
    (reason,) = fewer_risky.drops(bound)
    assert reason.startswith("average_precision ") and "on the reference (drop > 0.02)" in reason
    assert fewer_risky.drops({"average_precision": 0.1}) == []  # within a wide bound
    small = for_window(reference, "tx_fraud", world(200, seed=14, shift=-0.8)[0], BUDGET, 500)
    assert small.not_judged is not None and small.drops(bound) == []  # never a number


def test_the_estimated_drop_bound_is_checked_at_load_by_its_key_path(tmp_path: Path) -> None:
    import yaml

    from shipyard.errors import ShipyardError
    from shipyard.monitoring.policy import DEFAULT_MONITORING_POLICY, load_monitoring_policy

    raw = yaml.safe_load(Path(DEFAULT_MONITORING_POLICY).read_text())
    for bad, fragment in (
        ({"brier": 0.1}, "max_estimated_drop.brier"),
        ({"roc_auc": -1}, "roc_auc"),
    ):
        raw["quality"]["max_estimated_drop"] = bad
        path = tmp_path / "policy.yaml"
        path.write_text(yaml.safe_dump(raw))
        with pytest.raises(ShipyardError, match=fragment):
            load_monitoring_policy(path)
