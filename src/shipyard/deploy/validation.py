"""Rendered manifests against their schemas, offline: Kubernetes' own (strict, as
`kubectl apply --validate=strict`) and Argo Rollouts' CRDs (through the npm-locked validator)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

from shipyard.artifacts import atomic_dir, progress
from shipyard.errors import ShipyardError

VALIDATOR = Path(__file__).resolve().parents[3] / "registry" / "kubernetes"


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
