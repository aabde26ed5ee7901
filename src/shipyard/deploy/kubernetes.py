"""The Kubernetes target: manifests for Argo Rollouts, rendered offline (`validation` checks
them, `kubectl` reads Argo's verdict).

Argo Rollouts steps the weights and runs the analysis; nothing of ours runs in the cluster.
The Rollout's steps are the policy's steps, and after each one an AnalysisRun judges canary
against stable with the policy's gates (see `promql.py`). `kubectl apply -f` the folder.

Traffic is split by Istio, whose data plane is Envoy, the proxy the local target runs: Argo
writes each step's weight into the VirtualService, so a 5 % step is 5 % of requests whatever
the replica count, and shadow is Istio's mirroring of every request to the canary, as Envoy
mirrors locally. Clients call the Service named after the model.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from shipyard.deploy.promql import gate_queries
from shipyard.policy import Policy

TEMPLATE = "canary-gates"
ROUTE, MIRROR = "primary", "mirror"  # the VirtualService's route Argo weighs, and its mirror


def _labels(model: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": model, "app.kubernetes.io/part-of": "shipyard"}


def _service(model: str, role: str | None, policy: Policy) -> dict[str, Any]:
    """`MODEL-stable`, `MODEL-canary` (Argo narrows their selectors), or `MODEL` (clients')."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": model if role is None else f"{model}-{role}",
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


def _steps(
    model: str, version: str, stable_version: str, policy: Policy, strategy: str
) -> list[dict[str, Any]]:
    """Canary: each weight, its window, its analysis. Shadow: the canary scaled up with no
    weight, every request mirrored to it for each window, then the mirror removed."""
    pause = f"{max(int(policy.canary.step_seconds), 1)}s"
    analysis = {
        "templates": [{"templateName": f"{model}-{TEMPLATE}"}],
        "args": [
            {"name": "canary-version", "value": version},
            {"name": "stable-version", "value": stable_version},
        ],
    }
    if strategy == "shadow":
        steps: list[dict[str, Any]] = [
            {"setCanaryScale": {"replicas": policy.kubernetes.replicas}},
            {
                "setMirrorRoute": {
                    "name": MIRROR,
                    "percentage": 100,
                    "match": [{"method": {"exact": "POST"}}],
                }
            },
        ]
        for _ in policy.canary.steps:
            steps += [{"pause": {"duration": pause}}, {"analysis": analysis}]
        return [*steps, {"setMirrorRoute": {"name": MIRROR}}]  # no match: the mirror goes
    steps = []
    for weight in policy.canary.steps:
        steps += [{"setWeight": weight}, {"pause": {"duration": pause}}, {"analysis": analysis}]
    return steps


def _virtual_service(model: str, policy: Policy) -> dict[str, Any]:
    """The route Argo moves: all of it to stable until the first step."""

    def to(role: str, weight: int) -> dict[str, Any]:
        return {
            "destination": {"host": f"{model}-{role}", "port": {"number": 80}},
            "weight": weight,
        }

    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {
            "name": model,
            "namespace": policy.kubernetes.namespace,
            "labels": _labels(model),
        },
        "spec": {
            "hosts": [model],
            "http": [{"name": ROUTE, "route": [to("stable", 100), to("canary", 0)]}],
        },
    }


def _rollout(
    model: str, version: str, stable_version: str, image: str, policy: Policy, strategy: str
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
                    "trafficRouting": {
                        "istio": {"virtualService": {"name": model, "routes": [ROUTE]}},
                        "managedRoutes": [{"name": MIRROR}],
                    },
                    "steps": _steps(model, version, stable_version, policy, strategy),
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
    strategy: str = "canary",
) -> dict[str, list[dict[str, Any]]]:
    """File name -> the manifests it holds; `score_buckets` are the ones both images count in."""
    return {
        "services.yaml": [_service(model, r, policy) for r in (None, "stable", "canary")],
        "virtual-service.yaml": [_virtual_service(model, policy)],
        "analysis-template.yaml": [_analysis_template(model, policy, score_buckets)],
        "rollout.yaml": [_rollout(model, version, stable_version, image, policy, strategy)],
    }
