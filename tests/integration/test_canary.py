"""Local canary with real processes: stable and canary `bentoml serve`, Envoy, the
controller as a CLI process, and clients calling through Envoy the whole time.

Here: what only a real kill shows. A good canary to @champion and a bad shadow rejected run
with real processes in `test_canary_faults.py` (honest retrain, shadowed calibration fault);
the step, resume and rollback logic on a simulated fleet in `tests/unit/test_canary_controller.py`.
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

from shipyard.deploy.processes import free_port
from tests.conftest import DECISION_KEY, REPO, empty_store
from tests.integration import traffic
from tests.integration.registry_fixtures import NAME, register

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def world(
    tmp_path_factory: pytest.TempPathFactory, store_template: Path
) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("canary")
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": empty_store(store_template, tmp),
        "SHIPYARD_RUNTIME_DIR": str(tmp / "runtime"),
        "BENTOML_HOME": str(tmp / "bentoml"),
        "SHIPYARD_ACTOR": "canary-test",
        "SHIPYARD_DECISION_KEY": DECISION_KEY,  # decisions signed, as in production
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    from shipyard import promotion
    from shipyard.policy import load_policy

    policy = load_policy(REPO / "registry" / "policy.yaml")
    stable = register(tmp)
    promotion.promote(NAME, stable, "champion", policy)
    raw = yaml.safe_load((REPO / "registry" / "policy.yaml").read_text())
    # At 100 % stable serves nothing, so its alert rate comes from step 1 alone, and the kill
    # leaves that step to the resumed controller: 800 stable records at the 1 % budget make a
    # step-1 sample with no alert (so no expected alerts, and a last step that can only time
    # out) a 1-in-3000 event; with 400 it was 1 in 50, and CI met it.
    raw["canary"].update(steps=[50, 100], step_seconds=3, min_requests=800, failures_tolerated=0)
    raw["serving"]["max_latency_ms"] = 10_000  # shed for the canary, not for pytest's load
    # Latency is noise on two shared cores. A looser alert test (95 %, its minimum of 6
    # expected alerts) keeps this wiring test from waiting on a few alerts; the fault suite
    # keeps 99 %.
    raw["canary"]["gates"].update(
        max_p99_ms=3000, max_p99_ratio=10, confidence=0.95, min_expected_positives=6
    )
    (tmp / "policy.yaml").write_text(yaml.safe_dump(raw))
    (tmp / "params.yaml").write_text((REPO / "params.yaml").read_text())
    try:
        yield {"tmp": tmp, "env": env, "stable": stable}
    finally:
        subprocess.run(["shipyard", "deploy", "stop", NAME], cwd=tmp, env=env, check=False)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def test_killed_controller_resumes_at_a_known_weight(
    world: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGKILL the controller mid-step: the state names the weight, and resume finishes."""
    from shipyard import registry
    from shipyard.deploy.deployment import load_state

    for key in ("MLFLOW_TRACKING_URI", "SHIPYARD_RUNTIME_DIR", "BENTOML_HOME"):
        monkeypatch.setenv(key, world["env"][key])  # the module's store, not this test's own
    newer = register(world["tmp"], seed=3)
    port = free_port()
    clients = traffic.proxy_clients(port)
    controller = subprocess.Popen(
        [
            "shipyard",
            "deploy",
            f"{NAME}@{newer}",
            "--port",
            str(port),
            "--policy",
            str(world["tmp"] / "policy.yaml"),
        ],
        cwd=world["tmp"],
        env=world["env"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert controller.stderr is not None
        for line in controller.stderr:
            if "step 1/2: canary weight 50%" in line:
                break
        controller.kill()
        controller.wait(timeout=30)
        state = load_state(NAME)
        assert (state.status, state.weight) == ("running", 50)
        result = subprocess.run(
            ["shipyard", "deploy", "resume", NAME, "--policy", str(world["tmp"] / "policy.yaml")],
            cwd=world["tmp"],
            env=world["env"],
            capture_output=True,
            text=True,
            timeout=600,
        )
    finally:
        clients.close()
    seen = clients.seen()
    assert result.returncode == 0, result.stderr[-3000:]
    assert "resuming at step 1 (weight 50%)" in result.stderr
    assert f"{NAME}: promoted" in result.stdout
    champion = registry.version_by_alias(NAME, "champion")
    assert champion is not None and str(champion.version) == newer
    assert seen and {s for s, _ in seen} == {200}
