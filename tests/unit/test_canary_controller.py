"""The canary controller's step, reject, abort and resume logic on a simulated fleet.

The controller's own code runs unchanged (state file, scrapes parsed as Prometheus text,
windows, gates, pairing); only the clock, the processes, the proxy and the registry are
simulated (`fleet.py`), so each deployment takes milliseconds instead of minutes. The
real-process suites (`tests/integration/test_canary*.py`) keep what only processes show.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from shipyard.deploy import canary, deployment
from shipyard.deploy.state import DeploymentState
from shipyard.errors import GateFailed, ShipyardError
from shipyard.policy import Policy, load_policy
from tests.conftest import REPO
from tests.unit.fleet import (
    CANARY_PID,
    FAULTS,
    HONEST,
    PROXY_PID,
    STABLE_PID,
    Behaviour,
    Fleet,
    Service,
    running_state,
)

SCORES = {"max_score_psi", "max_score_ks"}
CAUGHT_BY = {  # fault -> the gates that describe it
    "diverged": {"max_error_rate"},
    "crashing": {"max_error_rate"},  # seen only in Envoy's statistics
    "slow": {"max_p99_ms", "max_p99_ratio"},
    "collapsed": SCORES,
    "shrunk": SCORES,
    "inflated": SCORES,
    "silent": {"positive_rate_ratio"},
    "noisy": {"positive_rate_ratio"},
    "segment": SCORES,
}


@pytest.fixture
def policy() -> Policy:
    return load_policy(REPO / "registry" / "policy.yaml")


@pytest.fixture(autouse=True)
def runtime(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SHIPYARD_RUNTIME_DIR", str(tmp_path / "runtime"))
    return tmp_path / "runtime"


def fleet_of(behaviour: Behaviour, strategy: str = "canary") -> tuple[Fleet, DeploymentState]:
    log = deployment.prediction_log("m")
    log.mkdir(parents=True)
    fleet = Fleet(Service("1", HONEST, log), Service("2", behaviour, log))
    state = running_state("m", strategy)
    deployment.save_state(state)
    return fleet, state


def failed_gates(state: DeploymentState) -> set[str]:
    return set(state.history[-1].failed_gates())


def test_an_honest_canary_steps_through_every_weight_and_becomes_stable(policy: Policy) -> None:
    fleet, state = fleet_of(HONEST)
    final = canary.advance(state, policy, fleet.plant())
    steps = policy.canary.steps
    assert [r["weight"] for r in fleet.routes[: len(steps)]] == steps
    assert fleet.weights_on_disk[: len(steps)] == steps  # on disk before the proxy moved
    assert final.status == "promoted" and fleet.outcomes == [("passed", "2")]
    last = fleet.routes[-1]
    assert last["stable"].version == "2"  # the canary's process, as stable now
    assert {k: v for k, v in last.items() if k != "stable"} == {
        "weight": 0,
        "mode": "canary",
        "canary": None,
    }
    assert fleet.stopped == [STABLE_PID]  # the old stable retires; the canary serves on
    saved = deployment.load_state("m")
    assert saved.status == "promoted" and saved.stable.version == "2"
    assert all(h.passed for h in saved.history) and len(saved.history) == len(steps)
    assert all(h.canary_requests >= policy.canary.min_requests for h in saved.history)
    assert fleet.client_errors == 0


def test_a_canary_the_promotion_gates_refuse_does_not_keep_the_traffic(policy: Policy) -> None:
    """Every canary gate passed, then `promote --to champion` refused it: weight 0, canary
    stopped, stable still serving, and the refusal is what the controller raises."""

    def refuse(name: str, version: str, analysis: dict[str, Any], policy: Policy) -> None:
        raise GateFailed("promote: m version 2 to @champion: gate no_regression_ap: failed")

    fleet, state = fleet_of(HONEST)
    with pytest.raises(GateFailed, match="no_regression_ap"):
        canary.advance(state, policy, replace(fleet.plant(), passed=refuse))
    saved = deployment.load_state("m")
    assert saved.status == "promotion refused" and saved.weight == 0
    assert fleet.routes[-1] == {"weight": 0, "mode": "canary", "canary": None}
    assert fleet.stopped == [CANARY_PID] and saved.stable.version == "1"
    assert fleet.client_errors == 0


@pytest.mark.parametrize("fault", list(FAULTS))
def test_a_broken_canary_is_rolled_back_by_its_gate_before_half_the_traffic(
    policy: Policy, fault: str
) -> None:
    fleet, state = fleet_of(FAULTS[fault])
    with pytest.raises(GateFailed, match="rolled back: canary gate"):
        canary.advance(state, policy, fleet.plant())
    saved = deployment.load_state("m")
    assert saved.status == "rejected" and saved.weight == 0
    assert CAUGHT_BY[fault] & failed_gates(saved), failed_gates(saved)
    assert fleet.outcomes == [("rejected", "2")]
    assert fleet.routes[-1] == {"weight": 0, "mode": "canary", "canary": None}
    assert fleet.stopped == [CANARY_PID]  # stable keeps serving
    assert max(r["weight"] for r in fleet.routes) <= 25  # never half the clients
    assert fleet.client_errors == 0  # a canary's 5xx is retried on stable


def test_a_shadow_that_refuses_connections_fails_on_what_envoy_saw(policy: Policy) -> None:
    """Its own /metrics show no error (it never answered); the proxy's mirror counts do."""
    fleet, state = fleet_of(FAULTS["crashing"], "shadow")
    with pytest.raises(GateFailed, match="max_error_rate"):
        canary.advance(state, policy, fleet.plant())
    assert fleet.canary.requests.labels(path="/predict", status="500")._value.get() == 0
    assert fleet.at_proxy["mirror_5xx"] > 0 and fleet.client_errors == 0


def test_an_honest_shadow_passes_on_the_paired_gates(policy: Policy) -> None:
    fleet, state = fleet_of(HONEST, "shadow")
    final = canary.advance(state, policy, fleet.plant())
    assert final.status == "promoted"
    assert {r["weight"] for r in fleet.routes[:-1]} == {0}  # no client ever got the canary
    last = {g["gate"]: g for g in final.history[-1].gates}
    for gate in ("min_pairs", "max_logit_shift", "max_alert_disagreement"):
        assert last[gate]["passed"], last[gate]


def test_a_shadowed_calibration_fault_fails_the_paired_gates(policy: Policy) -> None:
    fleet, state = fleet_of(FAULTS["shrunk"], "shadow")
    with pytest.raises(GateFailed):
        canary.advance(state, policy, fleet.plant())
    saved = deployment.load_state("m")
    shift = next(g for g in saved.history[-1].gates if g["gate"] == "max_logit_shift")
    assert not shift["passed"] and shift["value"] == pytest.approx(2.0, abs=0.3)


def test_a_killed_controller_resumes_at_the_weight_it_left_on_disk(policy: Policy) -> None:
    fleet, state = fleet_of(HONEST)
    fleet.kill_at = 45.0  # inside the second step
    with pytest.raises(KeyboardInterrupt):
        canary.advance(state, policy, fleet.plant())
    left = deployment.load_state("m")
    assert (left.status, left.step, left.weight) == ("running", 1, 25)
    assert len(left.history) == 1 and fleet.outcomes == []
    done = len(fleet.routes)
    final = canary.resume("m", policy, fleet.plant())
    assert [r["weight"] for r in fleet.routes[done : done + 3]] == [25, 50, 100]
    assert final.status == "promoted" and fleet.outcomes == [("passed", "2")]
    assert [h.step for h in final.history] == [1, 2, 3, 4]


@pytest.mark.parametrize("gone", [CANARY_PID, STABLE_PID, PROXY_PID])
def test_a_resume_with_a_process_gone_rolls_back_to_weight_zero(policy: Policy, gone: int) -> None:
    fleet, state = fleet_of(HONEST)
    fleet.kill_at = 45.0
    with pytest.raises(KeyboardInterrupt):
        canary.advance(state, policy, fleet.plant())
    fleet.dead.add(gone)
    done = len(fleet.routes)
    with pytest.raises(ShipyardError, match="a process of the canary is gone; rolled back"):
        canary.resume("m", policy, fleet.plant())
    saved = deployment.load_state("m")
    assert (saved.status, saved.weight) == ("rolled back after restart", 0)
    assert fleet.outcomes == [("aborted", "2")] and CANARY_PID in fleet.stopped
    # The weight goes back to 0 through the proxy when the proxy is still there.
    assert fleet.routes[done:] == (
        [] if gone == PROXY_PID else [{"weight": 0, "mode": "canary", "canary": None}]
    )


def test_a_finished_deployment_is_not_resumed(policy: Policy) -> None:
    fleet, state = fleet_of(HONEST)
    canary.advance(state, policy, fleet.plant())
    done = len(fleet.routes)
    assert canary.resume("m", policy, fleet.plant()).status == "promoted"
    assert len(fleet.routes) == done and fleet.outcomes == [("passed", "2")]


def test_a_controller_that_loses_sight_of_the_canary_aborts_at_weight_zero(
    policy: Policy,
) -> None:
    """A scrape that keeps timing out ends the canary at weight 0, tagged aborted: the
    controller never crashes with the canary still taking traffic."""
    fleet, state = fleet_of(HONEST)
    fleet.kill_at = None
    fleet.scrape_fails = True
    with pytest.raises(ShipyardError, match="canary aborted at weight 0: GET") as info:
        canary.advance(state, policy, fleet.plant())
    assert not isinstance(info.value, GateFailed)
    saved = deployment.load_state("m")
    assert saved.status == "aborted" and saved.weight == 0
    assert fleet.routes[-1] == {"weight": 0, "mode": "canary", "canary": None}
    assert fleet.outcomes == [("aborted", "2")] and fleet.stopped == [CANARY_PID]


def test_one_failed_step_is_tolerated_but_a_failed_last_step_never_is(policy: Policy) -> None:
    """failures_tolerated: 1 lets a canary recover from one bad step; the last step decides."""
    flaky = Behaviour(error_rate=0.2)
    fleet, state = fleet_of(flaky)
    recovered = Behaviour()

    real_sleep = fleet._sleep

    def heal(seconds: float) -> None:  # the canary errors only in its first step
        if len(deployment.load_state("m").history) >= 1:
            fleet.canary.behaviour = recovered
        real_sleep(seconds)

    final = canary.advance(state, policy, replace(fleet.plant(), sleep=heal))
    assert final.status == "promoted"
    assert [(h.step, h.passed) for h in final.history] == [
        (1, False),  # repeated at its weight, not stepped past
        (1, True),
        (2, True),
        (3, True),
        (4, True),
    ]
    assert [r["weight"] for r in fleet.routes[:5]] == [5, 5, 25, 50, 100]
