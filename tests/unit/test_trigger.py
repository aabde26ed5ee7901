"""The retrain trigger on constructed window sequences: hysteresis, cooldown, unjudged windows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from shipyard.errors import ConfigError
from shipyard.monitoring.policy import TriggerPolicy, load_monitoring_policy
from shipyard.monitoring.trigger import (
    CANNOT_JUDGE,
    DRIFT,
    NO_DRIFT,
    TRIGGER,
    Verdict,
    decide,
)
from tests.conftest import REPO

T0 = datetime(2026, 11, 1, tzinfo=UTC)
POLICY = TriggerPolicy(drifted_windows=2, of_last=3, cooldown="24h")


def run(pattern: str, cfg: TriggerPolicy = POLICY, hours: int = 1) -> list[int]:
    """`pattern`: one window per character, `d` drifted, `.` quiet, `?` too few rows."""
    history: list[dict[str, object]] = []
    codes = []
    for i, c in enumerate(pattern):
        end = (T0 + timedelta(hours=hours * (i + 1))).isoformat()
        verdict = Verdict(end, judged=c != "?", drifted=c == "d", reasons=[])
        decision = decide(history, verdict, cfg)
        history.append(decision.as_dict())
        codes.append(decision.code)
    return codes


def test_one_noisy_window_triggers_nothing() -> None:
    assert (
        run("..d..d..d..")
        == [NO_DRIFT] * 2
        + [DRIFT]
        + [NO_DRIFT] * 2
        + [DRIFT]
        + [NO_DRIFT] * 2
        + [DRIFT]
        + [NO_DRIFT] * 2
    )


def test_two_of_three_trigger_once_through_a_long_drift() -> None:
    codes = run("...dddddddddd")
    assert codes.count(TRIGGER) == 1
    assert codes[4] == TRIGGER  # the second drifted window
    assert codes[5:] == [DRIFT] * 8  # cooldown: the same long drift does not trigger again


def test_a_drift_that_outlasts_the_cooldown_triggers_again() -> None:
    codes = run("d" * 30)  # hourly windows, 24 h cooldown
    assert [i for i, c in enumerate(codes) if c == TRIGGER] == [1, 25]


def test_unjudged_windows_neither_count_nor_break_the_run() -> None:
    assert run("d??d")[-1] == TRIGGER  # the two judged windows are the last two judged
    assert run("????")[0] == CANNOT_JUDGE


def test_k_of_m_looks_only_at_the_last_m_judged_windows() -> None:
    assert run("d...d")[-1] == DRIFT  # the first drift fell out of the last 3
    assert run("d.d")[-1] == TRIGGER


def test_policy_file_loads_and_bad_keys_are_named(tmp_path: object) -> None:
    policy = load_monitoring_policy(REPO / "monitoring" / "policy.yaml")
    assert policy.trigger.drifted_windows <= policy.trigger.of_last
    with pytest.raises(ValueError, match="cannot exceed"):
        TriggerPolicy(drifted_windows=4, of_last=3, cooldown="1h")
    with pytest.raises(ValueError, match="duration"):
        TriggerPolicy(drifted_windows=1, of_last=3, cooldown="soon")
    from pathlib import Path

    bad = Path(str(tmp_path)) / "policy.yaml"
    bad.write_text((REPO / "monitoring" / "policy.yaml").read_text().replace("min_rows", "minrows"))
    with pytest.raises(ConfigError, match=r"policy.yaml: window.min_rows: Field required"):
        load_monitoring_policy(bad)
