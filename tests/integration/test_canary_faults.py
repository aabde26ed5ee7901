"""Broken challengers on the local target, each caught by the gate that describes its fault.

Real processes throughout: stable and canary `bentoml serve`, the router, the controller, and
clients calling the router. Clients that stable answered must never see an error.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import REPO
from tests.integration import traffic
from tests.integration.registry_fixtures import NAME, TARGET, register

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("faults")
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp / 'mlflow.db'}",
        "SHIPYARD_RUNTIME_DIR": str(tmp / "runtime"),
        "BENTOML_HOME": str(tmp / "bentoml"),
        "SHIPYARD_ACTOR": "fault-test",
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    from shipyard import promotion
    from shipyard.config import load_policy

    stable = register(tmp)
    promotion.promote(NAME, stable, "champion", load_policy(REPO / "registry/policy.yaml"), TARGET)
    versions = {fault: register(tmp, seed=i + 1, fault=fault) for i, fault in enumerate(FAULTS)}
    raw = yaml.safe_load((REPO / "registry" / "policy.yaml").read_text())
    raw["canary"].update(steps=[50, 100], step_seconds=3, min_requests=300, failures_tolerated=0)
    # Loose where sampling noise lives (two equal models differ by a few points of positive
    # rate over a few hundred requests); the faults below miss these by a wide margin.
    raw["canary"]["gates"].update(max_p99_ms=3000, max_p99_ratio=3, max_positive_rate_diff=0.08)
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


# fault -> the gate that must catch it
FAULTS = {
    "diverged": "max_error_rate",
    "slow": "max_p99_ratio",
    "collapsed": "max_score_psi",
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
    assert state["status"] == "rejected" and state["weight"] == 0
    assert FAULTS[fault] in traffic.failed_gates(state)
    # Stable's clients saw no error; only the canary's share can have failed.
    assert {s for s, v in seen if v == "stable"} == {200}
    assert {v for _, v in seen} <= {"stable", "canary"}
    assert sum(v == "stable" for _, v in seen) > 100
    tags = registry.resolve(NAME, version).tags
    assert tags["shipyard.canary.result"] == "rejected"
    champion = registry.version_by_alias(NAME, "champion")
    assert champion is not None and str(champion.version) == world["stable"]
