"""The stream's shadow judged by the HTTP canary's model gates, on logs of the same events:
an honest challenger passes, and each way of being broken is caught by a gate."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from shipyard.policy import Policy, load_policy
from shipyard.scoring.shadow import judge
from shipyard.serving.buckets import reference_bounds
from tests.conftest import REPO

N = 3000


@pytest.fixture(scope="module")
def policy() -> Policy:
    return load_policy(REPO / "registry" / "policy.yaml")


def logit(p: np.ndarray) -> np.ndarray:
    return np.log(p / (1 - p))


def expit(x: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-x))


@pytest.fixture(scope="module")
def stable_scores() -> np.ndarray:
    rng = np.random.default_rng(4)
    return expit(rng.normal(-6.0, 1.6, N))


def records(version: str, scores: np.ndarray, threshold: float) -> list[dict[str, Any]]:
    return [
        {
            "request_id": str(i),
            "timestamp": "2026-12-06T06:00:00.000+00:00",
            "model_name": "fraud-detector",
            "model_version": version,
            "score": float(s),
            "decision": bool(s >= threshold),
        }
        for i, s in enumerate(scores)
    ]


def verdict(stable: np.ndarray, canary: np.ndarray, policy: Policy) -> Any:
    threshold = float(np.quantile(stable, 1 - policy.promotion.alert_budget))
    logs = records("1", stable, threshold) + records("2", canary, threshold)
    return judge(logs, "1", "2", policy, reference_bounds(stable))


def test_an_honest_challenger_passes(stable_scores: np.ndarray, policy: Policy) -> None:
    noise = np.random.default_rng(5).normal(0, 0.15, N)
    found = verdict(stable_scores, expit(logit(stable_scores) + noise), policy)
    assert found.passed, [r.describe() for r in found.results]
    assert found.pairs == N
    names = {r.gate for r in found.results}
    assert {"min_pairs", "max_logit_shift", "max_score_psi", "max_score_ks"} <= names
    assert not names & {"max_error_rate", "max_p99_ms", "max_p99_ratio"}


@pytest.mark.parametrize(
    ("break_it", "gate"),
    [
        (lambda s, r: expit(logit(s) + 1.5), "max_logit_shift"),  # miscalibrated
        (lambda s, r: r.permutation(s), "max_alert_disagreement"),  # same scores, wrong rows
        (lambda s, r: np.full_like(s, 1e-4), "max_logit_shift"),  # never alerts
    ],
)
def test_a_broken_challenger_fails_the_gate_built_for_it(
    stable_scores: np.ndarray, policy: Policy, break_it: Any, gate: str
) -> None:
    canary = break_it(stable_scores, np.random.default_rng(6))
    found = verdict(stable_scores, canary, policy)
    assert not found.passed
    failed = {r.gate for r in found.results if not r.passed}
    assert gate in failed, [r.describe() for r in found.results]


def test_too_few_shared_events_is_not_a_pass(stable_scores: np.ndarray, policy: Policy) -> None:
    few = stable_scores[:100]
    found = verdict(few, few, policy)
    assert not found.passed
    assert "min_pairs" in {r.gate for r in found.results if not r.passed}
