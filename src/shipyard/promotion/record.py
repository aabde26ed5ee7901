"""Decision records: what promotion decided, stored on the version (tags, signed: see
`grant`), as JSON on its run, and in the audit log."""

from __future__ import annotations

import getpass
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from shipyard.gates import GateResult
from shipyard.tags import VersionTags

AUDIT_LOG = "audit/promotions.jsonl"
TARGETS = ("challenger", "champion")
CANARY_TAG = "shipyard.canary.result"
STRATEGY_TAG = "shipyard.deploy.strategy"  # how the local deployment exposes a challenger
STRATEGIES = ("canary", "shadow")


@dataclass
class Decision:
    model: str
    version: str
    to: str
    champion: str | None
    gates: list[GateResult] = field(default_factory=list)
    deltas: dict[str, dict[str, float]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(g.passed for g in self.gates)

    def failed_gate(self) -> GateResult | None:
        return next((g for g in self.gates if not g.passed), None)

    def record(self, tags: VersionTags, actor: str, extra: dict[str, Any]) -> dict[str, Any]:
        return {
            "model": self.model,
            "version": self.version,
            "to": self.to,
            "decision": "passed" if self.passed else "failed",
            "champion_before": self.champion,
            "first_model": self.champion is None,
            "gates": [g.as_dict() for g in self.gates],
            "deltas": self.deltas,
            "notes": self.notes,
            "data_hash": tags.data_hash,
            "git_sha": tags.git_sha,
            "actor": actor,
            "time": datetime.now(UTC).isoformat(timespec="seconds"),
            **extra,
        }


def actor() -> str:
    return os.environ.get("SHIPYARD_ACTOR") or getpass.getuser()


def decision_tag(action: str) -> str:
    return f"shipyard.promotion.{action}"


def store(mv: Any, record: dict[str, Any]) -> None:
    """Tags (signed: see `grant`), the JSON record on the run, and a line in the audit log."""
    from shipyard import grant, registry, runtime

    stamp = record["time"].replace(":", "").replace("-", "")
    action = record.get("to", record.get("action", "decision"))
    tag = decision_tag(action)
    tags = grant.stamp(mv, tag, record["decision"], record["time"])
    registry.set_version_tags(mv.name, str(mv.version), {**tags, f"{tag}.actor": record["actor"]})
    registry.log_version_json(mv.run_id, record, f"promotions/{stamp}-{action}.json")
    runtime.append_jsonl(AUDIT_LOG, record)
