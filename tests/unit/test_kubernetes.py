"""Argo Rollouts manifests: the policy's steps and gates, and offline schema validation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from shipyard.deploy import kubectl, kubernetes, validation
from shipyard.errors import ShipyardError
from shipyard.policy import CanaryGates, Policy, load_policy
from tests.conftest import REPO

IMAGE = "registry.example/fraud-detector-service:v7-0123abcd"


@pytest.fixture
def policy() -> Policy:
    return load_policy(REPO / "registry" / "policy.yaml")


BUCKETS = (0.001, 0.01, 0.1, 0.5, 1.0)


def rendered(policy: Policy) -> dict[str, list[dict[str, Any]]]:
    return kubernetes.render("fraud-detector", "7", "5", IMAGE, policy, BUCKETS)


def test_rollout_steps_follow_the_policy_with_analysis_after_each(policy: Policy) -> None:
    rollout = rendered(policy)["rollout.yaml"][0]
    steps = rollout["spec"]["strategy"]["canary"]["steps"]
    assert [s["setWeight"] for s in steps if "setWeight" in s] == policy.canary.steps
    assert [list(s) for s in steps[:3]] == [["setWeight"], ["pause"], ["analysis"]]
    args = {a["name"]: a["value"] for a in steps[2]["analysis"]["args"]}
    assert args == {"canary-version": "7", "stable-version": "5"}
    container = rollout["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == IMAGE


def test_every_canary_gate_has_a_query_with_the_policy_bound(policy: Policy) -> None:
    template = rendered(policy)["analysis-template.yaml"][0]
    metrics = {m["name"]: m for m in template["spec"]["metrics"]}
    gates = policy.canary.gates
    for gate in ("max_error_rate", "max_p99_ms", "max_p99_ratio", "max_score_psi", "max_score_ks"):
        bound = getattr(gates, gate)
        metric = metrics[gate.replace("_", "-")]
        assert metric["successCondition"].endswith(f"result[0] <= {bound}")
    for metric in metrics.values():
        assert "isNaN(result[0])" in metric["successCondition"]  # no data never passes
    assert metrics["min-requests"]["successCondition"].endswith(f">= {policy.canary.min_requests}")
    # The alert-rate test at the policy's confidence, both ways, with its minimum sample.
    assert metrics["positive-rate-not-higher"]["successCondition"].endswith("<= 2.3263")
    assert metrics["positive-rate-not-lower"]["successCondition"].endswith(">= -2.3263")
    assert metrics["min-expected-positives"]["successCondition"].endswith(
        f">= {gates.min_expected_positives}"
    )
    assert set(CanaryGates.model_fields) == {
        *(g for g in gates.model_fields if g.startswith("max_")),
        "confidence",
        "min_expected_positives",
    }
    # PSI reads exactly the stable's buckets, as prometheus_client writes `le`.
    psi = metrics["max-score-psi"]["provider"]["prometheus"]["query"]
    assert 'le="0.001"' in psi and 'le="+Inf"' in psi and 'le="0.05"' not in psi


def test_rendered_manifests_validate_and_land_whole(policy: Policy, tmp_path: Path) -> None:
    out = tmp_path / "k8s"
    validation.write(rendered(policy), out, policy.kubernetes.kubernetes_version)
    assert sorted(p.name for p in out.iterdir()) == [
        "analysis-template.yaml",
        "rollout.yaml",
        "services.yaml",
        "virtual-service.yaml",
    ]
    kinds = [d["kind"] for p in out.iterdir() for d in yaml.safe_load_all(p.read_text())]
    assert sorted(kinds) == [
        "AnalysisTemplate",
        "Rollout",
        "Service",
        "Service",
        "Service",
        "VirtualService",
    ]


def test_istio_carries_the_weights_argo_sets(policy: Policy) -> None:
    """Argo finds the route it weighs by name, and its two destinations by the Services the
    Rollout names; before the first step stable has every request."""
    manifests = rendered(policy)
    canary = manifests["rollout.yaml"][0]["spec"]["strategy"]["canary"]
    service = manifests["virtual-service.yaml"][0]
    routing = canary["trafficRouting"]["istio"]["virtualService"]
    assert routing["name"] == service["metadata"]["name"] == "fraud-detector"
    routes = {r["name"]: r["route"] for r in service["spec"]["http"]}
    assert list(routes) == routing["routes"] == ["primary"]
    weights = {d["destination"]["host"]: d["weight"] for d in routes["primary"]}
    assert weights == {canary["stableService"]: 100, canary["canaryService"]: 0}
    names = {s["metadata"]["name"] for s in manifests["services.yaml"]}
    assert set(service["spec"]["hosts"]) | set(weights) <= names  # every host is a Service


def test_shadow_mirrors_every_request_and_never_weighs_the_canary(
    policy: Policy, tmp_path: Path
) -> None:
    manifests = kubernetes.render("fraud-detector", "7", "5", IMAGE, policy, BUCKETS, "shadow")
    canary = manifests["rollout.yaml"][0]["spec"]["strategy"]["canary"]
    steps = canary["steps"]
    assert not any("setWeight" in s for s in steps)
    assert steps[0] == {"setCanaryScale": {"replicas": policy.kubernetes.replicas}}
    mirror = steps[1]["setMirrorRoute"]
    assert mirror["percentage"] == 100 and mirror["name"] in {
        r["name"] for r in canary["trafficRouting"]["managedRoutes"]
    }
    assert sum("analysis" in s for s in steps) == len(policy.canary.steps)
    assert steps[-1] == {"setMirrorRoute": {"name": mirror["name"]}}  # removed at the end
    validation.write(manifests, tmp_path / "k8s", policy.kubernetes.kubernetes_version)


@pytest.mark.parametrize(
    ("file", "mutate", "message"),
    [
        (
            "rollout.yaml",
            lambda d: d["spec"].update(replicas="four"),
            "rollout.yaml: Rollout/fraud-detector",
        ),
        (  # a typo in the pod template: only a strict schema sees it
            "rollout.yaml",
            lambda d: d["spec"]["template"]["spec"]["containers"][0].update(imagePullPolicyy="x"),
            "rollout.yaml: Rollout/fraud-detector: template/spec/containers/0",
        ),
        (
            "analysis-template.yaml",
            lambda d: d["spec"]["metrics"][0].pop("name"),
            "analysis-template.yaml: AnalysisTemplate/fraud-detector-canary-gates",
        ),
        (
            "services.yaml",
            lambda d: d["spec"]["ports"][0].update(port="eighty"),
            "services.yaml: Service/fraud-detector",
        ),
        (
            "virtual-service.yaml",
            lambda d: d["spec"]["http"][0]["route"][0].update(weight="all"),
            "virtual-service.yaml: VirtualService/fraud-detector",
        ),
    ],
)
def test_a_broken_manifest_is_named_and_nothing_is_written(
    policy: Policy, tmp_path: Path, file: str, mutate: Any, message: str
) -> None:
    manifests = rendered(policy)
    mutate(manifests[file][0])
    out = tmp_path / "k8s"
    with pytest.raises(ShipyardError, match="invalid manifest") as err:
        validation.write(manifests, out, policy.kubernetes.kubernetes_version)
    assert message in str(err.value)
    assert not out.exists() and not list(tmp_path.iterdir())


def _rollout(status: dict[str, Any]) -> dict[str, Any]:
    steps = [{"setWeight": 50}, {"pause": {}}, {"analysis": {}}, {"setWeight": 100}]
    return {"spec": {"strategy": {"canary": {"steps": steps}}}, "status": status}


def _run(phase: str, metric: str = "max-score-psi", value: str = "[0.41]") -> dict[str, Any]:
    return {
        "metadata": {"name": "fraud-detector-abc-2"},
        "status": {
            "phase": phase,
            "metricResults": [
                {
                    "name": "max-error-rate",
                    "phase": "Successful",
                    "measurements": [{"value": "[0]"}],
                },
                {"name": metric, "phase": phase, "measurements": [{"value": value}]},
            ],
        },
    }


def test_argo_verdicts_are_read_from_rollout_and_analysis_runs() -> None:
    healthy = {"phase": "Healthy", "currentStepIndex": 4, "stableRS": "h2", "currentPodHash": "h2"}
    assert kubectl.rollout_outcome(_rollout(healthy), [_run("Successful")])["passed"] is True
    halfway = {"phase": "Paused", "currentStepIndex": 2, "stableRS": "h1", "currentPodHash": "h2"}
    assert kubectl.rollout_outcome(_rollout(halfway), [])["passed"] is None
    # Healthy but not at the last step is not a pass (e.g. a rollout that was reset).
    early = {**healthy, "currentStepIndex": 1}
    assert kubectl.rollout_outcome(_rollout(early), [])["passed"] is None
    aborted = {"phase": "Degraded", "abort": True, "message": "RolloutAborted"}
    verdict = kubectl.rollout_outcome(_rollout(aborted), [_run("Failed")])
    assert verdict["passed"] is False
    assert verdict["failed_gates"] == [
        {"analysis_run": "fraud-detector-abc-2", "gate": "max-score-psi", "value": "[0.41]"}
    ]
