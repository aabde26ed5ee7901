"""Gate logic and best-candidate choice: the ops code we test harder than the models."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from shipyard import metrics
from shipyard.config import parse_params
from shipyard.errors import GateFailed
from shipyard.gates import check_thresholds, first_failure
from shipyard.pipeline.evaluate import pick_best
from shipyard.pipeline.register import gate


def test_thresholds_pass_and_fail() -> None:
    results = check_thresholds({"roc_auc": 0.9, "brier": 0.03}, {"roc_auc": 0.8}, {"brier": 0.02})
    assert [(r.gate, r.passed) for r in results] == [("min_roc_auc", True), ("max_brier", False)]
    failed = first_failure(results)
    assert failed is not None and failed.describe() == "max_brier 0.0300 <= 0.0200: failed"


def test_bound_is_inclusive() -> None:
    assert first_failure(check_thresholds({"roc_auc": 0.8}, {"roc_auc": 0.8}, {})) is None


def test_missing_metric_fails_its_gate() -> None:
    results = check_thresholds({}, {"average_precision": 0.1}, {})
    assert not results[0].passed


def test_nan_metric_fails_its_gate() -> None:
    assert not check_thresholds({"roc_auc": float("nan")}, {"roc_auc": 0.5}, {})[0].passed


def test_register_gate_names_the_failed_gate(raw_params: dict[str, Any]) -> None:
    params = parse_params(raw_params)
    good = {"roc_auc": 0.95, "average_precision": 0.7, "brier": 0.003}
    assert all(r.passed for r in gate(good, params))
    with pytest.raises(GateFailed, match=r"register: gate min_roc_auc 0\.7000 >= 0\.8000: failed"):
        gate({**good, "roc_auc": 0.7}, params)


def test_best_is_chosen_on_validation_not_test() -> None:
    scores = {
        "a": {"validation": {"average_precision": 0.6}, "test": {"average_precision": 0.9}},
        "b": {"validation": {"average_precision": 0.7}, "test": {"average_precision": 0.5}},
    }
    assert pick_best(scores, "average_precision") == "b"


def test_precision_at_budget() -> None:
    y = np.array([1, 0, 1, 0, 0, 0, 0, 0, 0, 0])
    scores = np.array([0.9, 0.8, 0.7, 0.1, 0.2, 0.3, 0.05, 0.0, 0.01, 0.02])
    assert metrics.precision_at_budget(y, scores, 0.2) == 0.5
    assert metrics.precision_at_budget(y, scores, 0.3) == pytest.approx(2 / 3)
    assert metrics.budget_threshold(scores, 0.2) == 0.8


def test_quality_refuses_one_class_labels() -> None:
    with pytest.raises(ValueError, match="both classes"):
        metrics.quality(np.zeros(5), np.linspace(0, 1, 5), 0.1)


def test_a_strategy_belongs_to_the_challenger_promotion_only() -> None:
    """Refused before the registry is touched: the deployment reads it from the version."""
    from shipyard.errors import ShipyardError
    from shipyard.policy import load_policy
    from shipyard.promotion import promote

    policy = load_policy("registry/policy.yaml")
    with pytest.raises(ShipyardError, match="--strategy shadow needs --to challenger"):
        promote("m", "1", "champion", policy, strategy="shadow")
    with pytest.raises(ShipyardError, match="--strategy must be one of"):
        promote("m", "1", "challenger", policy, strategy="mirror")


def test_paired_metrics_know_every_name_and_refuse_others() -> None:
    import numpy as np

    from shipyard import metrics

    y = np.array([0, 0, 1, 1])
    p = np.array([0.1, 0.2, 0.8, 0.9])
    assert metrics._metric("brier", y, p, 0.5) == pytest.approx((0.01 + 0.04 + 0.04 + 0.01) / 4)
    assert metrics._metric("log_loss", y, p, 0.5) > 0
    with pytest.raises(ValueError, match="no paired comparison for metric 'f1'"):
        metrics._metric("f1", y, p, 0.5)  # never silently average precision


def test_alert_volume_gate_counts_each_model_at_its_own_threshold() -> None:
    import numpy as np

    from shipyard.policy import AlertVolumeConfig
    from shipyard.promotion.gates import alert_volume_gate

    old = np.linspace(0, 1, 1000)
    cfg = AlertVolumeConfig(max_ratio=1.5)
    same, counts = alert_volume_gate(old**2, old, (0.99**2, 0.99), cfg, 0.01)
    assert same.passed and counts["challenger"] == counts["champion"] == 10
    silent, _ = alert_volume_gate(old, old, (1.0 + 1e-9, 0.99), cfg, 0.01)
    assert not silent.passed and silent.value == 0
    loud, _ = alert_volume_gate(old, old, (0.9, 0.99), cfg, 0.01)
    assert not loud.passed and loud.value == pytest.approx(10.0)
    # The champion alerts twice its budget on drifted rows; a retrain back on budget passes.
    back, counts = alert_volume_gate(old, old, (0.99, 0.98), cfg, 0.01)
    assert back.passed and counts["ratio"] == pytest.approx(0.5)
    # 17 against 10 alerts is noise in a count that small, not a change of volume.
    noise, _ = alert_volume_gate(old, old, (0.983, 0.99), cfg, 0.01)
    assert noise.passed


def test_calibration_gate_sees_scores_shrunk_with_the_same_ranking() -> None:
    import numpy as np
    import yaml

    from shipyard.policy import Policy
    from shipyard.promotion.gates import calibration_gate
    from tests.conftest import REPO

    policy = Policy.model_validate(yaml.safe_load((REPO / "registry/policy.yaml").read_text()))
    rng = np.random.default_rng(0)
    p = rng.beta(0.5, 20, size=5000)
    y = (rng.random(5000) < p).astype(int)  # p is calibrated by construction
    ok, _ = calibration_gate(y, p, p, policy)
    assert ok.passed
    shrunk, delta = calibration_gate(y, p / 5, p, policy)  # same order, a fifth of the scores
    assert not shrunk.passed and delta["delta"] > 0.1
