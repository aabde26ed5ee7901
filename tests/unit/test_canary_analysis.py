"""Canary gates on constructed scrapes: the ops logic we test harder than the models."""

from __future__ import annotations

import math
from typing import Any

import pytest

from shipyard.config import Policy
from shipyard.deploy.analysis import judge, ks, parse_metrics, psi, quantile, window
from tests.conftest import REPO

LABELS = 'model_name="fraud-detector",model_version="{v}"'
SCORE_BOUNDS = [0.0, 0.05, 0.1, 0.5, 1.0]
LATENCY_BOUNDS = [0.01, 0.05, 0.1, 0.5]


def scrape(
    v: str, ok: int, errors: int, latency: list[int], scores: list[int], positives: int
) -> str:
    """A /metrics page as the service writes it; `latency`/`scores` are per-bucket counts."""
    lab = LABELS.format(v=v)
    lines = [
        f'shipyard_http_requests_total{{{lab},path="/predict",status="200"}} {ok}',
        f'shipyard_http_requests_total{{{lab},path="/predict",status="500"}} {errors}',
        f'shipyard_http_requests_total{{{lab},path="/readyz",status="200"}} 7',
        f"shipyard_predictions_total{{{lab}}} {sum(scores)}",
        f"shipyard_positive_decisions_total{{{lab}}} {positives}",
        "# HELP ignored",
    ]
    for name, bounds, counts in (
        ("shipyard_http_request_duration_seconds", LATENCY_BOUNDS, latency),
        ("shipyard_prediction_score", SCORE_BOUNDS, scores),
    ):
        running = 0
        for bound, count in zip([*bounds, math.inf], [*counts, 0], strict=True):
            running += count
            le = "+Inf" if math.isinf(bound) else str(bound)
            extra = ',path="/predict"' if "duration" in name else ""
            lines.append(f'{name}_bucket{{le="{le}",{lab}{extra}}} {running}')
    return "\n".join(lines)


@pytest.fixture
def gates() -> Any:
    import yaml

    return Policy.model_validate(
        yaml.safe_load((REPO / "registry/policy.yaml").read_text())
    ).canary.gates


EMPTY = parse_metrics(scrape("1", 0, 0, [0, 0, 0, 0], [0, 0, 0, 0, 0], 0))


def test_window_is_the_difference_of_two_scrapes() -> None:
    after = parse_metrics(scrape("1", 95, 5, [50, 40, 10, 0], [0, 60, 30, 8, 2], 3))
    w = window(EMPTY, after)
    assert (w.requests, w.server_errors, w.predictions, w.positives) == (100, 5, 100, 3)
    assert w.latency_buckets[-1] == (math.inf, 100)
    assert quantile(w.latency_buckets, 0.5) == pytest.approx(0.01)
    assert quantile(w.latency_buckets, 0.99) == pytest.approx(0.1 - 0.05 * 0.1)


def test_psi_and_ks() -> None:
    same = [(0.1, 10.0), (0.5, 60.0), (1.0, 100.0)]
    assert psi(same, same) == pytest.approx(0) and ks(same, same) == pytest.approx(0)
    shifted = [(0.1, 0.0), (0.5, 10.0), (1.0, 100.0)]
    assert psi(same, shifted) > 1 and ks(same, shifted) == pytest.approx(0.5)
    assert math.isnan(psi(same, [(0.1, 0.0), (0.5, 0.0), (1.0, 0.0)]))


def test_equal_variants_pass(gates: Any) -> None:
    page = scrape("x", 200, 0, [150, 40, 10, 0], [0, 120, 60, 16, 4], 4)
    stable = window(EMPTY, parse_metrics(page.replace('"x"', '"1"')))
    canary = window(EMPTY, parse_metrics(page.replace('"x"', '"2"')))
    results = judge(stable, canary, gates)
    assert all(r.passed for r in results), [r.describe() for r in results]


def test_skewed_scores_fail_the_ml_gates(gates: Any) -> None:
    stable = window(
        EMPTY, parse_metrics(scrape("1", 200, 0, [150, 40, 10, 0], [0, 120, 60, 16, 4], 4))
    )
    canary = window(
        EMPTY, parse_metrics(scrape("2", 200, 0, [150, 40, 10, 0], [0, 10, 40, 50, 100], 90))
    )
    failed = {r.gate for r in judge(stable, canary, gates) if not r.passed}
    assert failed == {"max_score_psi", "max_score_ks", "max_positive_rate_diff"}


def test_errors_and_slow_canary_fail_the_http_gates(gates: Any) -> None:
    stable = window(
        EMPTY, parse_metrics(scrape("1", 200, 0, [190, 10, 0, 0], [0, 120, 60, 16, 4], 4))
    )
    canary = window(
        EMPTY, parse_metrics(scrape("2", 180, 20, [0, 0, 0, 200], [0, 120, 60, 16, 4], 4))
    )
    failed = {r.gate for r in judge(stable, canary, gates) if not r.passed}
    assert {"max_error_rate", "max_p99_ratio"} <= failed


def test_no_traffic_never_passes(gates: Any) -> None:
    results = judge(window(EMPTY, EMPTY), window(EMPTY, EMPTY), gates)
    assert not any(r.passed for r in results)


def test_policy_steps_must_rise_to_100() -> None:
    import yaml

    from shipyard.config import ConfigError, _parse

    raw = yaml.safe_load((REPO / "registry/policy.yaml").read_text())
    raw["canary"]["steps"] = [50, 25, 100]
    with pytest.raises(ConfigError, match="canary: Value error, steps must rise"):
        _parse(Policy, raw, "policy.yaml")


def test_a_step_ends_early_only_on_repeated_server_errors() -> None:
    from shipyard.config import load_policy
    from shipyard.deploy.analysis import Window
    from shipyard.deploy.canary import _erroring
    from tests.conftest import REPO

    cfg = load_policy(REPO / "registry" / "policy.yaml").canary

    def w(requests: float, errors: float) -> Window:
        return Window(requests, errors, [], [], requests, 0.0)

    assert _erroring(w(10, 10), cfg)
    assert not _erroring(w(10, 1), cfg)  # one transient error waits for the full window
    assert not _erroring(w(5000, 5), cfg)  # 0.1 % is inside the 1 % gate
    assert not _erroring(w(0, 0), cfg)


def test_a_step_ends_early_only_on_scores_far_off_a_full_sample() -> None:
    from shipyard.config import load_policy
    from shipyard.deploy.analysis import Window
    from shipyard.deploy.canary import _clearly_off
    from tests.conftest import REPO

    cfg = load_policy(REPO / "registry" / "policy.yaml").canary  # 500 requests, diff <= 0.02
    stable = Window(600, 0, [], [], 600, 6.0)  # 1 % positive

    def canary(requests: float, positive_share: float) -> Window:
        return Window(requests, 0, [], [], requests, requests * positive_share)

    off = _clearly_off(stable, canary(600, 0.98), cfg)  # a unit bug: everything is fraud
    assert off is not None and off.gate == "max_positive_rate_diff"
    assert _clearly_off(stable, canary(100, 0.98), cfg) is None  # too few requests to judge
    assert _clearly_off(stable, canary(600, 0.035), cfg) is None  # failing, but close: wait
    assert _clearly_off(Window(100, 0, [], [], 100, 1.0), canary(600, 0.98), cfg) is None
