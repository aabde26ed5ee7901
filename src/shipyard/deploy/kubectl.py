"""The cluster side: the real `kubectl`, and Argo's verdict read from what it returns."""

from __future__ import annotations

import json
import shutil
import subprocess
from typing import Any

from shipyard.errors import ShipyardError


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
