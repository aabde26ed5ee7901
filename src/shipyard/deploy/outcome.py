"""What a finished canary does to the registry, whichever target ran it."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from shipyard.errors import GateFailed
from shipyard.policy import Policy
from shipyard.promotion import CANARY_TAG
from shipyard.tags import TAG

RESULT_TAG = CANARY_TAG  # read by the champion gate (promotion.gates.canary_gate)


def versions(name: str, ref: str) -> tuple[str, str]:
    """(challenger, champion) version numbers for a canary of REF, or a one-line refusal."""
    from shipyard import registry
    from shipyard.errors import ShipyardError

    challenger = str(registry.resolve(name, ref).version)
    champion = registry.version_by_alias(name, registry.CHAMPION)
    if champion is None:
        raise ShipyardError(f"deploy: {name} has no @champion; promote the first model directly")
    if str(champion.version) == challenger:
        raise ShipyardError(f"deploy: version {challenger} is already @champion")
    return challenger, str(champion.version)


def export(name: str, version: str, result: str, gate: str | None = None) -> Path:
    """Rewrite `<runtime>/metrics/canary-<model>.prom` with the model's last canary, for
    node_exporter's textfile collector: a rejection pages (`ShipyardCanaryRejected`) rather
    than waiting in a registry tag for someone to read it. The canary's process is gone by
    the time Prometheus would scrape it, hence a file."""
    from prometheus_client import CollectorRegistry, Gauge, generate_latest

    from shipyard.artifacts import atomic_file
    from shipyard.runtime import runtime_dir

    now, registry = time.time(), CollectorRegistry()
    Gauge(
        "shipyard_canary_decision_timestamp_seconds",
        "When the model's last canary ended, by result: passed, rejected or aborted",
        ["model_name", "model_version", "result"],
        registry=registry,
    ).labels(name, version, result).set(now)
    if gate is not None:
        Gauge(
            "shipyard_canary_rejected_timestamp_seconds",
            "When the model's last canary was rejected, and the first gate it failed",
            ["model_name", "model_version", "gate"],
            registry=registry,
        ).labels(name, version, gate.split()[0]).set(now)
    path = runtime_dir() / "metrics" / f"canary-{name}.prom"
    with atomic_file(path) as scratch:
        scratch.write_bytes(generate_latest(registry))
    return path


def passed(name: str, version: str, analysis: dict[str, Any], policy: Policy) -> None:
    """Tag the version, keep the analysis, and promote it to champion with it as evidence."""
    from shipyard import grant, promotion, registry

    mv = registry.resolve(name, version)
    registry.set_version_tags(name, version, grant.stamp(mv, RESULT_TAG, "passed"))
    registry.log_version_json(mv.run_id, analysis, "canary/analysis.json")
    export(name, version, "passed")
    promotion.promote(name, version, "champion", policy, evidence={"canary": analysis})


def rejected(name: str, version: str, failed_gate: str, analysis: dict[str, Any]) -> GateFailed:
    """Tag the version with the failing gate, drop its @challenger; the caller raises."""
    from shipyard import grant, registry

    mv = registry.resolve(name, version)
    tags = grant.stamp(mv, RESULT_TAG, "rejected")
    registry.set_version_tags(name, version, {**tags, TAG["canary_failed_gate"]: failed_gate})
    registry.log_version_json(mv.run_id, analysis, "canary/analysis.json")
    holder = registry.version_by_alias(name, registry.CHALLENGER)
    if holder is not None and str(holder.version) == version:
        registry.delete_alias(name, registry.CHALLENGER)
    export(name, version, "rejected", failed_gate)
    return GateFailed(f"deploy: {name} version {version} rolled back: canary gate {failed_gate}")


def aborted(name: str, version: str) -> None:
    from shipyard import grant, registry

    mv = registry.resolve(name, version)
    registry.set_version_tags(name, version, grant.stamp(mv, RESULT_TAG, "aborted"))
    export(name, version, "aborted")
