"""Promotion: may this version become @challenger or @champion? Gates, then a decision record.

`gates` are pure; `aliases` does the registry I/O around them and moves the aliases; `record`
stores every decision, passed or failed, on the version (tags + JSON artifact) and in the
audit log. The alias only moves when every gate passed.
"""

from shipyard.promotion.aliases import promote, rollback
from shipyard.promotion.record import (
    AUDIT_LOG,
    CANARY_TAG,
    STRATEGIES,
    STRATEGY_TAG,
    TARGETS,
    decision_tag,
)

__all__ = [
    "AUDIT_LOG",
    "CANARY_TAG",
    "STRATEGIES",
    "STRATEGY_TAG",
    "TARGETS",
    "decision_tag",
    "promote",
    "rollback",
]
