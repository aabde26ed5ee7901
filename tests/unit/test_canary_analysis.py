"""Canary gates on constructed scrapes: the ops logic we test harder than the models."""

from __future__ import annotations

import math
from typing import Any

import pytest

from shipyard.deploy.analysis import judge, ks, psi, quantile
from shipyard.deploy.window import parse_metrics, window
from shipyard.policy import Policy
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
        EMPTY, parse_metrics(scrape("1", 2000, 0, [1500, 400, 100, 0], [0, 1200, 600, 160, 40], 20))
    )
    canary = window(
        EMPTY,
        parse_metrics(scrape("2", 2000, 0, [1500, 400, 100, 0], [0, 100, 400, 500, 1000], 900)),
    )
    failed = {r.gate for r in judge(stable, canary, gates) if not r.passed}
    assert failed == {"max_score_psi", "max_score_ks", "positive_rate_ratio"}


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
    from shipyard.deploy.canary import _erroring
    from shipyard.deploy.window import Window
    from shipyard.policy import load_policy
    from tests.conftest import REPO

    cfg = load_policy(REPO / "registry" / "policy.yaml").canary

    def w(requests: float, errors: float) -> Window:
        return Window(requests, errors, [], [], requests, 0.0)

    assert _erroring(w(10, 10), cfg)
    assert not _erroring(w(10, 1), cfg)  # one transient error waits for the full window
    assert not _erroring(w(5000, 5), cfg)  # 0.1 % is inside the 1 % gate
    assert not _erroring(w(0, 0), cfg)


def _w(requests: float, positives: float) -> Any:
    from shipyard.deploy.window import Window

    return Window(requests, 0, [], [], requests, positives)


def test_a_step_ends_early_only_on_alerts_far_off_a_full_sample() -> None:
    from shipyard.deploy.canary import _clearly_off
    from shipyard.policy import load_policy

    policy = load_policy(REPO / "registry" / "policy.yaml")  # 500 requests, ratio 2
    stable = _w(20000, 200.0)  # 1 % positive, as the 1 % budget

    def off(canary: Any) -> Any:
        return _clearly_off(stable, canary, (stable, canary), policy)

    assert off(_w(600, 588)).gate == "positive_rate_ratio"  # a unit bug: everything is fraud
    assert off(_w(100, 98)) is None  # too few requests to judge
    assert off(_w(600, 9)) is None  # more alerts, but not clearly twice stable's: wait
    assert off(_w(1500, 0)).gate == "positive_rate_ratio"  # silent for 15 expected alerts
    assert off(_w(600, 0)) is None  # 6 expected: silence could still be chance


def test_alert_rate_test_known_answer() -> None:
    from shipyard.deploy.analysis import AlertRateTest, Alerts

    # 100 alerts in all; at ratio 1/2 the canary's share is 500 / 10500 of them.
    test = AlertRateTest.of(Alerts(10000, 100), Alerts(1000, 0), 2.0)
    assert test.expected == pytest.approx(10)
    assert test.z_fewer == pytest.approx(-2.2361, abs=1e-3)
    assert test.rejects(0.95) and not test.rejects(0.99)
    loud = AlertRateTest.of(Alerts(10000, 100), Alerts(1000, 100), 2.0)
    assert loud.ratio == pytest.approx(10) and loud.z_more > 5 and loud.rejects(0.99)
    same = AlertRateTest.of(Alerts(10000, 100), Alerts(1000, 10), 2.0)
    assert not same.rejects(0.9)
    assert math.isnan(AlertRateTest.of(Alerts(0, 0), Alerts(10, 1), 2.0).z_more)


def test_a_canary_passes_only_with_the_alerts_expected_of_it(gates: Any) -> None:
    from shipyard.deploy.analysis import Alerts, alert_rate_gates

    def results(canary_n: float) -> dict[str, bool]:
        got = alert_rate_gates(
            Alerts(20000, 200), Alerts(canary_n, canary_n / 100), gates, final=True
        )
        return {r.gate: r.passed for r in got}

    assert results(600) == {"positive_rate_ratio": True, "min_expected_positives": False}
    assert results(1200) == {"positive_rate_ratio": True, "min_expected_positives": True}


def test_ks_excess_allows_for_sampling_and_nothing_more() -> None:
    from shipyard.deploy.analysis import ks_excess

    same = [(0.1, 100.0), (0.5, 600.0), (1.0, 1000.0)]
    allowance = math.sqrt(-math.log(0.01 / 2) / 2) * math.sqrt(2 / 1000)
    assert ks_excess(same, same, 0.99) == pytest.approx(-allowance)
    shifted = [(0.1, 400.0), (0.5, 900.0), (1.0, 1000.0)]
    assert ks_excess(same, shifted, 0.99) == pytest.approx(0.3 - allowance)
    other_bounds = [(0.2, 100.0), (0.5, 600.0), (1.0, 1000.0)]
    assert math.isnan(ks_excess(same, other_bounds, 0.99))  # other buckets: nothing compared


def test_a_failed_last_step_always_rolls_back() -> None:
    from shipyard.deploy.canary import rejects
    from shipyard.policy import load_policy

    cfg = load_policy(REPO / "registry" / "policy.yaml").canary  # 1 failure tolerated
    assert not rejects(1, cfg, final=False, passed=False)
    assert rejects(2, cfg, final=False, passed=False)
    assert rejects(1, cfg, final=True, passed=False)
    assert not rejects(1, cfg, final=True, passed=True)


@pytest.mark.parametrize(
    ("change", "path"),
    [
        ({"steps": [50, 100], "failures_tolerated": 2}, "canary.failures_tolerated"),
        ({"gates": {"min_expected_positives": 5}}, "canary.gates.min_expected_positives"),
    ],
)
def test_a_policy_that_can_never_reject_is_refused(change: dict[str, Any], path: str) -> None:
    import yaml

    from shipyard.config import ConfigError, _parse

    raw = yaml.safe_load((REPO / "registry/policy.yaml").read_text())
    for key, value in change.items():
        if isinstance(value, dict):
            raw["canary"][key].update(value)
        else:
            raw["canary"][key] = value
    with pytest.raises(ConfigError, match=f"policy.yaml: {path}: Value error"):
        _parse(Policy, raw, "policy.yaml")


def test_reference_buckets_hold_equal_shares_and_the_tail() -> None:
    import numpy as np

    from shipyard.serving.buckets import reference_bounds

    scores = np.random.default_rng(0).beta(0.3, 30, size=20000)  # 99 % of scores below 0.05
    bounds = reference_bounds(scores)
    assert bounds[-1] == 1.0 and list(bounds) == sorted(set(bounds))
    shares = np.bincount(np.searchsorted(bounds, scores)) / len(scores)
    assert shares[:19] == pytest.approx(0.05, abs=0.002)  # each of the first 19 holds 5 %
    assert sum(b < 0.05 for b in bounds) >= 19  # resolution where the scores are
    assert reference_bounds([0.2] * 100) == (0.2, 1.0)  # ties merge, no empty buckets
    with pytest.raises(ValueError, match="finite"):
        reference_bounds([0.1, float("nan")])


def test_paired_answers_join_by_request_id_and_only_since_the_start() -> None:
    from shipyard.deploy import paired
    from shipyard.policy import load_policy

    def rec(v: str, rid: str, score: float, decision: bool, t: str = "2026-12-03T10:00") -> Any:
        return {
            "model_version": v,
            "request_id": rid,
            "score": score,
            "decision": decision,
            "timestamp": t,
        }

    records = [
        rec("1", "a", 0.5, True),
        rec("2", "a", 0.5 / (0.5 + 0.5 * math.e), False),  # the same request, one logit lower
        rec("1", "b", 0.1, False),
        rec("2", "b", 0.1 / (0.1 + 0.9 * math.e), False),
        rec("1", "c", 0.9, True),  # the canary never answered it: not a pair
        rec("2", "old", 0.9, True, "2026-12-03T09:00"),  # before the canary started
        rec("1", "old", 0.1, False, "2026-12-03T09:00"),
        rec("3", "a", 0.9, True),  # another version
    ]
    found = paired.pair(records, "1", "2", "2026-12-03T09:30")
    assert (found.pairs, found.either_alerted, found.disagreements) == (2, 1, 1)
    assert found.logit_shift == pytest.approx(-1.0) and found.disagreement == 1.0
    cfg = load_policy(REPO / "registry" / "policy.yaml").canary.paired
    results = {r.gate: r.passed for r in paired.gates(found, cfg, 2, 1, final=True)}
    assert results == {"min_pairs": True, "max_logit_shift": False, "max_alert_disagreement": False}
    # Too few alerts: not judged before the last step, failed on it.
    few = paired.Paired(500, 3, 0, 0.0)
    assert "max_alert_disagreement" not in {
        r.gate for r in paired.gates(few, cfg, 300, 12, final=False)
    }
    last = {r.gate: r.passed for r in paired.gates(few, cfg, 300, 12, final=True)}
    assert last["max_alert_disagreement"] is False


def test_the_pair_reader_reads_each_line_once_and_waits_for_whole_lines(tmp_path: Any) -> None:
    import json

    from shipyard.deploy.paired import Reader

    def line(v: str, rid: str, score: float) -> str:
        rec = {"model_version": v, "request_id": rid, "score": score, "decision": False}
        return json.dumps({**rec, "timestamp": "2026-12-03T10:00:00.000+00:00"}) + "\n"

    log = tmp_path / "predictions-1.jsonl"
    log.write_text(line("1", "a", 0.1) + line("2", "a", 0.1) + line("1", "b", 0.2)[:20])
    reader = Reader(tmp_path, "1", "2", "2026-01-01T00:00:00.000+00:00")
    assert reader.read().pairs == 1
    with log.open("a") as handle:  # the half-written line completes, its pair arrives
        handle.write(line("1", "b", 0.2)[20:] + line("2", "b", 0.2))
    found = reader.read()
    assert found.pairs == 2 and len(reader.records) == 4
