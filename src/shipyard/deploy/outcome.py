"""What a finished canary does to the registry, whichever target ran it."""

from __future__ import annotations

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


def passed(name: str, version: str, analysis: dict[str, Any], policy: Policy) -> None:
    """Tag the version, keep the analysis, and promote it to champion with it as evidence."""
    from shipyard import grant, promotion, registry

    mv = registry.resolve(name, version)
    registry.set_version_tags(name, version, grant.stamp(mv, RESULT_TAG, "passed"))
    registry.log_version_json(mv.run_id, analysis, "canary/analysis.json")
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
    return GateFailed(f"deploy: {name} version {version} rolled back: canary gate {failed_gate}")


def aborted(name: str, version: str) -> None:
    from shipyard import grant, registry

    mv = registry.resolve(name, version)
    registry.set_version_tags(name, version, grant.stamp(mv, RESULT_TAG, "aborted"))
