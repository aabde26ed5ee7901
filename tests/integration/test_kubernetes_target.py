"""`deploy --target kubernetes --apply` against a kubectl stand-in for the cluster.

There is no cluster here. The stand-in answers `kubectl apply` and `kubectl get ... -o json`
the way kubectl does with Argo Rollouts installed; the registry side is the real one.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml

from shipyard.tags import TAG
from tests.conftest import REPO
from tests.integration.registry_fixtures import NAME, register

pytestmark = pytest.mark.slow

KUBECTL = textwrap.dedent(
    """\
    #!{python}
    import json, os, sys
    from pathlib import Path
    scenario = json.loads(Path(os.environ["KUBECTL_SCENARIO"]).read_text())
    calls = Path(os.environ["KUBECTL_CALLS"])
    with calls.open("a") as log:
        log.write(json.dumps(sys.argv[1:]) + "\\n")
    if sys.argv[1] == "apply":
        print("service/fraud-detector-stable created\\nrollout.argoproj.io/fraud-detector created")
    elif sys.argv[2] == "rollouts.argoproj.io":
        polls = sum(1 for line in calls.read_text().splitlines() if "rollouts.argoproj.io" in line)
        states = scenario["rollout"]
        print(json.dumps(states[min(polls, len(states)) - 1]))
    else:
        print(json.dumps({{"items": scenario["runs"]}}))
    """
)


def _rollout(status: dict[str, Any]) -> dict[str, Any]:
    steps = [{"setWeight": 50}, {"pause": {}}, {"analysis": {}}]
    steps += [{"setWeight": 100}, {"pause": {}}, {"analysis": {}}]
    return {"spec": {"strategy": {"canary": {"steps": steps}}}, "status": status}


def _run(phase: str, metric: str, value: str) -> dict[str, Any]:
    return {
        "metadata": {"name": f"{NAME}-h2-2", "ownerReferences": [{"name": NAME}]},
        "status": {
            "phase": phase,
            "metricResults": [{"name": metric, "phase": phase, "measurements": [{"value": value}]}],
        },
    }


SCENARIOS = {
    "passes": {
        "rollout": [
            _rollout({"phase": "Paused", "currentStepIndex": 1, "stableRS": "h1"}),
            _rollout({"phase": "Progressing", "currentStepIndex": 4, "stableRS": "h1"}),
            _rollout(
                {
                    "phase": "Healthy",
                    "currentStepIndex": 6,
                    "stableRS": "h2",
                    "currentPodHash": "h2",
                }
            ),
        ],
        "runs": [_run("Successful", "max-score-psi", "[0.01]")],
    },
    "aborts": {
        "rollout": [
            _rollout({"phase": "Paused", "currentStepIndex": 1, "stableRS": "h1"}),
            _rollout({"phase": "Degraded", "abort": True, "message": "RolloutAborted"}),
        ],
        "runs": [_run("Failed", "max-score-psi", "[0.41]")],
    },
}


@pytest.fixture
def cluster(tmp_path: Path) -> dict[str, Any]:
    from shipyard import promotion
    from shipyard.policy import load_policy

    policy = load_policy(REPO / "registry" / "policy.yaml")
    # As `shipyard package` leaves them: the challenger's image counts scores in the
    # champion's buckets.
    packaged = {TAG["served_buckets"]: "[0.01,0.1,0.5,1.0]"}
    stable = register(tmp_path, tags=packaged)
    promotion.promote(NAME, stable, "champion", policy)
    challenger = register(tmp_path, seed=1, tags=packaged)
    raw = yaml.safe_load((REPO / "registry" / "policy.yaml").read_text())
    raw["canary"]["step_seconds"] = 1
    (tmp_path / "policy.yaml").write_text(yaml.safe_dump(raw))
    (tmp_path / "params.yaml").write_text((REPO / "params.yaml").read_text())
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "kubectl").write_text(KUBECTL.format(python=sys.executable))
    (bin_dir / "kubectl").chmod(0o755)
    env = {
        **os.environ,
        "PATH": os.pathsep.join(
            [str(bin_dir), str(Path(sys.executable).parent), os.environ["PATH"]]
        ),
        "KUBECTL_SCENARIO": str(tmp_path / "scenario.json"),
        "KUBECTL_CALLS": str(tmp_path / "calls.jsonl"),
        "SHIPYARD_RUNTIME_DIR": str(tmp_path / "runtime"),
    }
    return {"tmp": tmp_path, "env": env, "stable": stable, "challenger": challenger}


def deploy(cluster: dict[str, Any], scenario: str) -> subprocess.CompletedProcess[str]:
    (cluster["tmp"] / "scenario.json").write_text(json.dumps(SCENARIOS[scenario]))
    cmd = [
        "shipyard", "deploy", f"{NAME}@{cluster['challenger']}", "--target", "kubernetes",
        "--image", "registry.example/fraud-detector-service:v2-abc", "--out", "k8s",
        "--apply", "--timeout", "60", "--policy", "policy.yaml",
    ]  # fmt: skip
    return subprocess.run(
        cmd, cwd=cluster["tmp"], env=cluster["env"], capture_output=True, text=True, timeout=300
    )


def test_argo_promotion_makes_the_challenger_champion(cluster: dict[str, Any]) -> None:
    from shipyard import registry

    result = deploy(cluster, "passes")
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"{NAME} version {cluster['challenger']}: promoted" in result.stdout
    calls = [json.loads(c) for c in (cluster["tmp"] / "calls.jsonl").read_text().splitlines()]
    assert calls[0] == ["apply", "--validate=strict", "-n", "shipyard", "-f", "k8s"]
    rollout = yaml.safe_load((cluster["tmp"] / "k8s" / "rollout.yaml").read_text())
    assert rollout["spec"]["template"]["spec"]["containers"][0]["image"].endswith("v2-abc")
    champion = registry.version_by_alias(NAME, "champion")
    previous = registry.version_by_alias(NAME, "previous")
    assert champion is not None and str(champion.version) == cluster["challenger"]
    assert previous is not None and str(previous.version) == cluster["stable"]
    audit = cluster["tmp"] / "runtime" / "audit" / "promotions.jsonl"
    record = json.loads(audit.read_text().splitlines()[-1])
    assert record["evidence"]["canary"]["target"] == "kubernetes"
    assert record["evidence"]["canary"]["argo"]["passed"] is True


def test_argo_abort_rejects_the_challenger_naming_the_gate(cluster: dict[str, Any]) -> None:
    from shipyard import registry

    registry.set_alias(NAME, "challenger", cluster["challenger"])
    result = deploy(cluster, "aborts")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: deploy: {NAME} version {cluster['challenger']} rolled back: "
        "canary gate max-score-psi = [0.41]"
    )
    tags = registry.resolve(NAME, cluster["challenger"]).tags
    assert tags["shipyard.canary.result"] == "rejected"
    assert registry.version_by_alias(NAME, "challenger") is None
    champion = registry.version_by_alias(NAME, "champion")
    assert champion is not None and str(champion.version) == cluster["stable"]


def test_a_challenger_packaged_with_other_score_buckets_is_refused(
    cluster: dict[str, Any],
) -> None:
    from shipyard import registry

    registry.set_version_tags(NAME, cluster["challenger"], {TAG["served_buckets"]: "[0.2,1.0]"})
    result = deploy(cluster, "passes")
    assert result.returncode == 1
    assert "counts scores in other buckets than the champion" in result.stderr
    assert not (cluster["tmp"] / "calls.jsonl").exists()  # nothing reached the cluster
