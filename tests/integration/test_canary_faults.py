"""Broken challengers on the local target, each caught by the gate that describes its fault.

Real processes throughout: stable and canary `bentoml serve`, Envoy, the controller, and
clients calling Envoy. Clients that stable answered must never see an error.

One real fault per family of gates (server errors, latency, scores, alert rate, paired
shadow), each showing that a real service's metrics carry its fault to the gate. Every fault,
including the shrunk, inflated, segment and noisy ones this suite ran before, goes through
the controller on a simulated fleet in `tests/unit/test_canary_controller.py` in milliseconds.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import DECISION_KEY, REPO, empty_store
from tests.integration import traffic
from tests.integration.registry_fixtures import NAME, register

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def world(
    tmp_path_factory: pytest.TempPathFactory, store_template: Path
) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("faults")
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": empty_store(store_template, tmp),
        "SHIPYARD_RUNTIME_DIR": str(tmp / "runtime"),
        "BENTOML_HOME": str(tmp / "bentoml"),
        "SHIPYARD_ACTOR": "fault-test",
        "SHIPYARD_DECISION_KEY": DECISION_KEY,  # decisions signed, as in production
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    from shipyard import promotion
    from shipyard.policy import load_policy

    stable = register(tmp)
    promotion.promote(NAME, stable, "champion", load_policy(REPO / "registry/policy.yaml"))
    versions = {fault: register(tmp, seed=i + 1, fault=fault) for i, fault in enumerate(FAULTS)}
    raw = yaml.safe_load((REPO / "registry" / "policy.yaml").read_text())
    # 25 % first: at 100 % stable serves nothing, and the alert test needs its rate.
    raw["canary"].update(steps=[25, 100], step_seconds=4, min_requests=300, failures_tolerated=0)
    # Two cores run both services, Envoy and the clients: latency is loose here. The
    # score and alert gates keep the repository's defaults.
    raw["canary"]["gates"].update(max_p99_ms=3000, max_p99_ratio=3)
    # Two pytest workers share the two cores: shedding past 1 s would answer 503 for the
    # machine's load, not for anything a canary did.
    raw["serving"]["max_latency_ms"] = 10_000
    (tmp / "policy.yaml").write_text(yaml.safe_dump(raw))
    (tmp / "params.yaml").write_text((REPO / "params.yaml").read_text())
    try:
        yield {"tmp": tmp, "env": env, "stable": stable, "versions": versions}
    finally:
        subprocess.run(["shipyard", "deploy", "stop", NAME], cwd=tmp, env=env, check=False)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


SCORES = {"max_score_psi", "max_score_ks"}
# fault -> the gates that describe it (see `registry_fixtures.fit` for each fault)
FAULTS = {
    "diverged": {"max_error_rate"},
    "slow": {"max_p99_ratio"},
    "collapsed": SCORES,
    "silent": {"positive_rate_ratio"},  # honest scores, never alerts
}


@pytest.mark.parametrize("fault", list(FAULTS))
def test_a_broken_canary_is_rolled_back_by_its_gate(world: dict[str, Any], fault: str) -> None:
    from shipyard import registry
    from shipyard.deploy.deployment import load_state

    version = world["versions"][fault]
    result, seen = traffic.deploy(
        world["tmp"], world["env"], version, "canary", world["tmp"] / "policy.yaml"
    )
    assert result.returncode == 1, result.stderr[-3000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: deploy: {NAME} version {version} rolled back: canary gate ")
    state = load_state(NAME)
    assert state.status == "rejected" and state.weight == 0
    assert FAULTS[fault] & traffic.failed_gates(state)
    # No client saw an error: a canary's 5xx is retried on stable by Envoy.
    assert {s for s, _ in seen} == {200}
    assert {v for _, v in seen} <= {"stable", "canary"}
    assert sum(v == "stable" for _, v in seen) > 100
    tags = registry.resolve(NAME, version).tags
    assert tags["shipyard.canary.result"] == "rejected"
    champion = registry.version_by_alias(NAME, "champion")
    assert champion is not None and str(champion.version) == world["stable"]
    # For ShipyardCanaryRejected: the textfile names the version and its first failed gate.
    exported = (world["tmp"] / "runtime" / "metrics" / f"canary-{NAME}.prom").read_text()
    gate = tags["shipyard.canary.failed_gate"].split()[0]
    series = f'{{gate="{gate}",model_name="{NAME}",model_version="{version}"}}'
    assert f"shipyard_canary_rejected_timestamp_seconds{series}" in exported, exported


@pytest.fixture
def in_world(world: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """The module's store for this test's own registrations, not the per-test one."""
    for key in ("MLFLOW_TRACKING_URI", "SHIPYARD_RUNTIME_DIR", "BENTOML_HOME"):
        monkeypatch.setenv(key, world["env"][key])
    return world


def test_a_shadowed_calibration_fault_fails_the_paired_gates(in_world: dict[str, Any]) -> None:
    """Shadow mode pairs both answers to each request by the id Envoy gave it."""
    from shipyard import registry
    from shipyard.deploy.deployment import load_state

    world = in_world
    shrunk = register(world["tmp"], seed=50, fault="shrunk")
    result, seen = traffic.deploy(
        world["tmp"], world["env"], shrunk, "shadow", world["tmp"] / "policy.yaml"
    )
    assert result.returncode == 1, result.stderr[-3000:]
    state = load_state(NAME)
    assert state.status == "rejected"
    assert "max_logit_shift" in traffic.failed_gates(state)
    shift = next(g for g in state.history[-1].gates if g["gate"] == "max_logit_shift")
    assert shift["value"] == pytest.approx(2.0, abs=0.3)  # the fault's own size, paired
    assert seen and {s for s, _ in seen} == {200} and {v for _, v in seen} == {"stable"}
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: deploy: {NAME} version {shrunk} rolled back: canary gate ")
    assert registry.resolve(NAME, shrunk).tags["shipyard.canary.result"] == "rejected"
    champion = registry.version_by_alias(NAME, "champion")
    assert champion is not None and str(champion.version) == world["stable"]
    text = traffic.status(world["tmp"], world["env"])
    assert "rejected (shadow)" in text and "max_logit_shift" in text


def test_an_honest_retrain_passes_and_becomes_champion(in_world: dict[str, Any]) -> None:
    """Late in the module: it changes the champion the faults above were judged against."""
    from shipyard import registry
    from shipyard.deploy.deployment import load_state

    world = in_world
    honest = register(world["tmp"], seed=42)
    result, seen = traffic.deploy(
        world["tmp"], world["env"], honest, "canary", world["tmp"] / "policy.yaml"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    state = load_state(NAME)
    assert state.status == "promoted"
    last = {g["gate"]: g["passed"] for g in state.history[-1].gates}
    assert last["min_expected_positives"] and last["positive_rate_ratio"]
    assert {s for s, _ in seen} == {200}
    assert {"stable", "canary"} <= {v for _, v in seen}  # traffic really was split
    assert f"{NAME} version {honest}: promoted" in result.stdout
    champion = registry.version_by_alias(NAME, "champion")
    previous = registry.version_by_alias(NAME, "previous")
    assert champion is not None and str(champion.version) == honest
    assert previous is not None and str(previous.version) == world["stable"]
    assert registry.resolve(NAME, honest).tags["shipyard.canary.result"] == "passed"
    audit = (world["tmp"] / "runtime" / "audit" / "promotions.jsonl").read_text().splitlines()
    record = json.loads(audit[-1])
    assert record["to"] == "champion" and record["evidence"]["canary"]["steps"][-1]["weight"] == 100
    assert "promoted (canary)" in traffic.status(world["tmp"], world["env"])


def test_an_honest_shadow_passes_on_the_paired_gates(in_world: dict[str, Any]) -> None:
    from shipyard.deploy.deployment import load_state

    world = in_world
    honest = register(world["tmp"], seed=43)
    # What this checks is the paired gates. A shadow gets every request stable gets, on the
    # same two cores as stable, Envoy, the clients and the other worker: its p99 ratio swung
    # to 3.25, 3.45 and 4.83 in fresh-clone runs while its paired gates passed, and to 10.48
    # (184 ms against 17.6 ms) beside the other worker's demo; a fresh service's first
    # requests took 10-18 ms against 8 ms, so that was the cores, not the shadow. 50 is the
    # e2e demo's bound (`tests/e2e/tiny.yaml`); `max_p99_ms` still holds the shadow to 3 s,
    # and the `slow` fault keeps the ratio's bound of 3, where a slow canary is judged.
    raw = yaml.safe_load((world["tmp"] / "policy.yaml").read_text())
    raw["canary"]["gates"]["max_p99_ratio"] = 50
    policy = world["tmp"] / "shadow-policy.yaml"
    policy.write_text(yaml.safe_dump(raw))
    result, seen = traffic.deploy(world["tmp"], world["env"], honest, "shadow", policy)
    assert result.returncode == 0, result.stderr[-3000:]
    last = {g["gate"]: g for g in load_state(NAME).history[-1].gates}
    assert last["min_pairs"]["passed"] and last["max_logit_shift"]["passed"]
    assert last["max_alert_disagreement"]["passed"]
    assert {s for s, _ in seen} == {200}
