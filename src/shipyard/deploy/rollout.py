"""A canary on Kubernetes: render, `kubectl apply`, watch Argo's verdict, record it.

Argo Rollouts owns the weights, the analysis and the in-cluster rollback. This side only
hands it the manifests and turns its verdict into the registry outcome the local target
records too: promoted to champion with the analysis as evidence, or tagged rejected.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

from shipyard.artifacts import progress
from shipyard.deploy import kubectl, kubernetes, outcome, validation
from shipyard.errors import ShipyardError
from shipyard.policy import Policy


def render(
    name: str, ref: str, image: str, policy: Policy, out: Path, strategy: str | None = None
) -> dict[str, str]:
    """Manifests for canarying (or shadowing) version REF against the champion, validated,
    in `out`. The strategy defaults to what promotion recorded on the version."""
    from shipyard.deploy.canary import strategy_of

    challenger, champion = outcome.versions(name, ref)
    strategy = strategy or strategy_of(name, challenger)
    buckets = shared_buckets(name, challenger, champion)
    manifests = kubernetes.render(name, challenger, champion, image, policy, buckets, strategy)
    validation.write(manifests, out, policy.kubernetes.kubernetes_version)
    return {"version": challenger, "stable_version": champion, "strategy": strategy}


def shared_buckets(name: str, challenger: str, champion: str) -> tuple[float, ...]:
    """The score buckets the champion's image counts in, which the challenger's must match.

    Both come from the tag `shipyard package` leaves on a version; a challenger packaged
    against another champion would make every score gate compare nothing.
    """
    from shipyard import registry
    from shipyard.serving.buckets import check_bounds
    from shipyard.tags import TAG, VersionTags

    served = {}
    for version in (challenger, champion):
        bounds = VersionTags.of(registry.resolve(name, version)).served_buckets
        if bounds is None:
            raise ShipyardError(
                f"deploy: {name} version {version} was never packaged "
                f"(no tag {TAG['served_buckets']}); run `shipyard package {name}@{version}`"
            )
        served[version] = check_bounds(bounds)
    if served[challenger] != served[champion]:
        raise ShipyardError(
            f"deploy: {name} version {challenger} counts scores in other buckets than the "
            f"champion v{champion}; package it again (`shipyard package {name}@{challenger}`)"
        )
    return served[champion]


def _apply(out: Path, namespace: str) -> None:
    cmd = ["kubectl", "apply", "--validate=strict", "-n", namespace, "-f", str(out)]
    result = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=120)
    if result.returncode != 0:
        raise ShipyardError(f"kubectl apply -f {out}: {result.stderr.strip()[:300]}")
    progress("deploy", result.stdout.strip().replace("\n", "; "))


def _analysis_runs(name: str, namespace: str) -> list[dict[str, Any]]:
    runs = kubectl.kubectl_json("get", "analysisruns.argoproj.io", "-n", namespace)
    return [
        run
        for run in runs.get("items", [])
        if any(o.get("name") == name for o in run["metadata"].get("ownerReferences", []))
    ]


def watch(name: str, namespace: str, timeout: float, poll: float = 10.0) -> dict[str, Any]:
    """Poll the Rollout until Argo has promoted or aborted it."""
    deadline = time.monotonic() + timeout
    seen = None
    while True:
        rollout = kubectl.kubectl_json("get", "rollouts.argoproj.io", name, "-n", namespace)
        verdict = kubectl.rollout_outcome(rollout, _analysis_runs(name, namespace))
        step = rollout.get("status", {}).get("currentStepIndex")
        if step != seen:
            progress("deploy", f"rollout {name}: step {step}, phase {verdict['phase']}")
            seen = step
        if verdict["passed"] is not None:
            return verdict
        if time.monotonic() > deadline:
            raise ShipyardError(
                f"deploy: rollout {name} undecided after {timeout:.0f} s (phase "
                f"{verdict['phase']}); Argo keeps it where it is, see `kubectl argo rollouts get`"
            )
        time.sleep(poll)


def run(
    name: str,
    ref: str,
    image: str,
    policy: Policy,
    out: Path,
    *,
    apply: bool,
    timeout: float,
    strategy: str | None = None,
) -> dict[str, Any]:
    versions = render(name, ref, image, policy, out, strategy)
    namespace = policy.kubernetes.namespace
    if not apply:
        progress("deploy", f"apply with: kubectl apply -n {namespace} -f {out}")
        return {**versions, "status": "rendered"}
    _apply(out, namespace)
    verdict = watch(name, namespace, timeout, poll=min(10.0, policy.canary.step_seconds))
    analysis = {
        "strategy": versions["strategy"],
        "target": "kubernetes",
        "stable_version": versions["stable_version"],
        "argo": verdict,
    }
    if not verdict["passed"]:
        failed = verdict["failed_gates"][0] if verdict["failed_gates"] else None
        gate = (
            f"{failed['gate']} = {failed['value']}"
            if failed
            else f"aborted ({verdict['message'] or verdict['phase']})"
        )
        raise outcome.rejected(name, versions["version"], gate, analysis)
    outcome.passed(name, versions["version"], analysis, policy)
    return {**versions, "status": "promoted"}
