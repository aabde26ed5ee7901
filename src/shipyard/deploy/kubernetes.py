"""The Kubernetes target: manifests for Argo Rollouts, rendered and validated offline.

Argo Rollouts steps the weights and runs the analysis; nothing of ours runs in the cluster.
The Rollout's steps are the policy's steps, and after each one an AnalysisRun judges canary
against stable with the policy's gates (see `promql.py`). `kubectl apply -f` the folder.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from shipyard.artifacts import atomic_dir, progress
from shipyard.config import Policy
from shipyard.deploy.promql import gate_queries
from shipyard.errors import ShipyardError

VALIDATOR = Path(__file__).resolve().parents[3] / "registry" / "kubernetes"
TEMPLATE = "canary-gates"


def _labels(model: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": model, "app.kubernetes.io/part-of": "shipyard"}


def _service(model: str, role: str, policy: Policy) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": f"{model}-{role}",
            "namespace": policy.kubernetes.namespace,
            "labels": _labels(model),
        },
        "spec": {
            # Argo Rollouts adds the pod-template hash to each selector as it shifts traffic.
            "selector": _labels(model),
            "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}],
        },
    }


def _analysis_template(
    model: str, policy: Policy, score_buckets: Sequence[float]
) -> dict[str, Any]:
    window = f"{max(int(policy.canary.step_seconds), 1)}s"
    metrics = [
        {
            "name": gate["name"],
            "count": 1,
            "failureLimit": 0,
            "successCondition": gate["condition"],
            "provider": {
                "prometheus": {"address": policy.kubernetes.prometheus, "query": gate["query"]}
            },
        }
        for gate in gate_queries(
            model, window, policy.canary.gates, policy.canary.min_requests, score_buckets
        )
    ]
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "AnalysisTemplate",
        "metadata": {
            "name": f"{model}-{TEMPLATE}",
            "namespace": policy.kubernetes.namespace,
            "labels": _labels(model),
        },
        "spec": {
            "args": [{"name": "canary-version"}, {"name": "stable-version"}],
            "metrics": metrics,
        },
    }


def _steps(model: str, version: str, stable_version: str, policy: Policy) -> list[dict[str, Any]]:
    pause = f"{max(int(policy.canary.step_seconds), 1)}s"
    analysis = {
        "templates": [{"templateName": f"{model}-{TEMPLATE}"}],
        "args": [
            {"name": "canary-version", "value": version},
            {"name": "stable-version", "value": stable_version},
        ],
    }
    steps: list[dict[str, Any]] = []
    for weight in policy.canary.steps:
        steps += [{"setWeight": weight}, {"pause": {"duration": pause}}, {"analysis": analysis}]
    return steps


def _rollout(
    model: str, version: str, stable_version: str, image: str, policy: Policy
) -> dict[str, Any]:
    k8s = policy.kubernetes
    labels = {**_labels(model), "shipyard.io/model-version": version}
    probe = {"httpGet": {"path": "/readyz", "port": "http"}, "periodSeconds": 5}
    container = {
        "name": "service",
        "image": image,
        "ports": [{"name": "http", "containerPort": k8s.port, "protocol": "TCP"}],
        "env": [
            {"name": "SHIPYARD_PREDICTION_LOG", "value": "/var/log/shipyard"},
            {"name": "OMP_NUM_THREADS", "value": "1"},
            {
                "name": "SHIPYARD_API_KEY",
                "valueFrom": {
                    "secretKeyRef": {"name": f"{model}-api-key", "key": "key", "optional": True}
                },
            },
        ],
        "readinessProbe": probe,
        "livenessProbe": {**probe, "httpGet": {"path": "/livez", "port": "http"}},
        "resources": {
            "requests": {"cpu": k8s.cpu, "memory": k8s.memory},
            "limits": {"memory": k8s.memory},
        },
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": [{"name": "predictions", "mountPath": "/var/log/shipyard"}],
    }
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Rollout",
        "metadata": {"name": model, "namespace": k8s.namespace, "labels": _labels(model)},
        "spec": {
            "replicas": k8s.replicas,
            "revisionHistoryLimit": 3,
            "selector": {"matchLabels": _labels(model)},
            "template": {
                "metadata": {
                    "labels": labels,
                    "annotations": {
                        "prometheus.io/scrape": "true",
                        "prometheus.io/port": str(k8s.port),
                        "prometheus.io/path": "/metrics",
                    },
                },
                "spec": {
                    "automountServiceAccountToken": False,
                    "containers": [container],
                    "volumes": [{"name": "predictions", "emptyDir": {}}],
                },
            },
            "strategy": {
                "canary": {
                    "canaryService": f"{model}-canary",
                    "stableService": f"{model}-stable",
                    "steps": _steps(model, version, stable_version, policy),
                }
            },
        },
    }


def render(
    model: str,
    version: str,
    stable_version: str,
    image: str,
    policy: Policy,
    score_buckets: Sequence[float],
) -> dict[str, list[dict[str, Any]]]:
    """File name -> the manifests it holds; `score_buckets` are the ones both images count in."""
    return {
        "services.yaml": [_service(model, r, policy) for r in ("stable", "canary")],
        "analysis-template.yaml": [_analysis_template(model, policy, score_buckets)],
        "rollout.yaml": [_rollout(model, version, stable_version, image, policy)],
    }


def _strict_core(doc: dict[str, Any], version: str) -> list[str]:
    """Core kinds and the Rollout's pod template against Kubernetes' strict schemas.

    Strict means an unknown field is an error, as `kubectl apply --validate=strict` has it.
    """
    import kubernetes_validate

    if doc["apiVersion"] == "v1":
        subject = doc
    elif doc["kind"] == "Rollout":
        subject = {
            "apiVersion": "v1",
            "kind": "PodTemplate",
            "metadata": {"name": doc["metadata"]["name"]},
            "template": doc["spec"]["template"],
        }
    else:
        return []
    try:
        kubernetes_validate.validate(subject, version, strict=True)
    except kubernetes_validate.ValidationError as err:
        path = "/".join(str(p) for p in err.path)
        return [f"{doc['kind']}/{doc['metadata']['name']}: {path}: {err.message}"]
    return []


def validate(folder: Path, kubernetes_version: str) -> None:
    """Every manifest against its schema: Kubernetes' own, and Argo Rollouts' CRDs (via node)."""
    files = sorted(folder.glob("*.yaml"))
    problems = []
    for path in files:
        for doc in yaml.safe_load_all(path.read_text()):
            problems += [f"{path.name}: {p}" for p in _strict_core(doc, kubernetes_version)]
    node = shutil.which("node")
    if node is None or not (VALIDATOR / "node_modules").is_dir():
        raise ShipyardError(
            f"kubernetes: the Argo Rollouts schema validator is not installed "
            f"(needs node and `npm ci` in {VALIDATOR}; `make` does both)"
        )
    result = subprocess.run(
        [node, str(VALIDATOR / "validate.mjs"), *map(str, files)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    problems += [line for line in result.stderr.splitlines() if line.strip()]
    if result.returncode != 0 and not problems:
        problems.append(f"validator exited {result.returncode}")
    if problems:
        raise ShipyardError(
            f"kubernetes: invalid manifest: {problems[0]}"
            + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else "")
        )


def write(manifests: dict[str, list[dict[str, Any]]], out: Path, kubernetes_version: str) -> None:
    """Write and validate in a scratch folder; `out` only ever holds a valid set."""
    with atomic_dir(out) as scratch:
        for name, docs in manifests.items():
            (scratch / name).write_text(yaml.safe_dump_all(docs, sort_keys=False))
        validate(scratch, kubernetes_version)
    progress(
        "deploy", f"manifests written to {out} and valid against Kubernetes {kubernetes_version}"
    )


def rollout_outcome(rollout: dict[str, Any], runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Read Argo's verdict from `kubectl get rollout/analysisrun -o json` output.

    `passed` is True when every step ran and the canary's pods became stable, False when Argo
    aborted it, None while it is still in progress.
    """
    status = rollout.get("status", {})
    steps = len(rollout.get("spec", {}).get("strategy", {}).get("canary", {}).get("steps", []))
    failed = [
        {"analysis_run": run["metadata"]["name"], "gate": m["name"], "value": _last_value(m)}
        for run in runs
        for m in run.get("status", {}).get("metricResults", [])
        if m.get("phase") in ("Failed", "Error", "Inconclusive")
    ]
    if status.get("abort") or status.get("phase") == "Degraded":
        passed: bool | None = False
    elif (
        status.get("phase") == "Healthy"
        and status.get("currentStepIndex") == steps
        and status.get("stableRS")
        and status.get("stableRS") == status.get("currentPodHash")
    ):
        passed = True
    else:
        passed = None
    return {
        "passed": passed,
        "phase": status.get("phase"),
        "message": status.get("message", ""),
        "failed_gates": failed,
        "analysis_runs": [r["metadata"]["name"] for r in runs],
    }


def _last_value(metric: dict[str, Any]) -> str:
    measurements = metric.get("measurements") or [{}]
    return str(measurements[-1].get("value", "")) or str(metric.get("message", ""))


def kubectl_json(*args: str) -> dict[str, Any]:
    """The real `kubectl`, whatever context the environment gives it."""
    cmd = [shutil.which("kubectl") or "kubectl", *args, "-o", "json"]
    result = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=60)
    if result.returncode != 0:
        raise ShipyardError(f"kubectl {' '.join(args)}: {result.stderr.strip()[:300]}")
    out: dict[str, Any] = json.loads(result.stdout)
    return out
