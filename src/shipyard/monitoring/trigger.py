"""When drift becomes a retrain: K drifted of the last M judged windows, then a cooldown.

One noisy window must trigger nothing, and one long drift must trigger once. Time is the
windows' own end time, never the wall clock, so a replayed history decides the same way.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from shipyard.monitoring.policy import TriggerPolicy, parse_duration

# Exit codes of `shipyard drift check`, distinct so a scheduler can branch on them.
NO_DRIFT, DRIFT, TRIGGER, CANNOT_JUDGE = 0, 3, 4, 5


@dataclass(frozen=True)
class Verdict:
    """One window's judgement, before the trigger policy sees it."""

    window_end: str  # ISO 8601, UTC
    judged: bool
    drifted: bool
    reasons: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Decision:
    window_end: str
    judged: bool
    drifted: bool
    triggered: bool
    reasons: list[str]
    code: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def decide(history: list[dict[str, Any]], verdict: Verdict, cfg: TriggerPolicy) -> Decision:
    """`history` is earlier decisions (as persisted), oldest first."""
    if not verdict.judged:
        return Decision(verdict.window_end, False, False, False, verdict.reasons, CANNOT_JUDGE)
    if not verdict.drifted:
        return Decision(verdict.window_end, True, False, False, verdict.reasons, NO_DRIFT)
    judged = [h for h in history if h["judged"]][-(cfg.of_last - 1) :] if cfg.of_last > 1 else []
    drifted = sum(bool(h["drifted"]) for h in judged) + 1
    reasons = list(verdict.reasons)
    end = datetime.fromisoformat(verdict.window_end)
    last = max((h["window_end"] for h in history if h["triggered"]), default=None)
    cooling = last is not None and end - datetime.fromisoformat(last) < parse_duration(cfg.cooldown)
    if drifted < cfg.drifted_windows:
        reasons.append(
            f"drifted in {drifted} of the last {len(judged) + 1} judged windows; "
            f"{cfg.drifted_windows} of {cfg.of_last} trigger"
        )
        return Decision(verdict.window_end, True, True, False, reasons, DRIFT)
    if cooling:
        reasons.append(f"in cooldown ({cfg.cooldown}) after the trigger at {last}")
        return Decision(verdict.window_end, True, True, False, reasons, DRIFT)
    reasons.append(f"drifted in {drifted} of the last {len(judged) + 1} judged windows")
    return Decision(verdict.window_end, True, True, True, reasons, TRIGGER)
