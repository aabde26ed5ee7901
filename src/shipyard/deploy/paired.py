"""Paired comparison in shadow mode: both variants answered the same requests.

Stable answers the client and the canary gets a mirrored copy with the same request id, so
their prediction-log records pair up one to one. Differences between the pairs carry no
sampling noise of who got which request, so a shift of scores or decisions that a histogram
comparison needs thousands of requests to see shows within a few hundred pairs.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from shipyard.gates import GateResult
from shipyard.policy import PairedGates


@dataclass(frozen=True)
class Paired:
    pairs: int
    either_alerted: int  # records at least one variant alerted on
    disagreements: int  # of those, the ones only one variant alerted on
    logit_shift: float  # median of canary - stable log-odds over the pairs

    @property
    def disagreement(self) -> float:
        return self.disagreements / self.either_alerted if self.either_alerted else math.nan


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return np.asarray(np.log(p / (1 - p)))


def join(
    records: Iterable[dict[str, Any]], stable: str, canary: str, since: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Stable's scores and alerts, then the canary's, on the request ids both logged at or
    after `since` (ISO time); row i of each is the same request."""
    answers: dict[str, dict[str, tuple[float, bool]]] = {stable: {}, canary: {}}
    for r in records:
        version = str(r.get("model_version"))
        if version in answers and str(r.get("timestamp", "")) >= since:
            answers[version][str(r["request_id"])] = (float(r["score"]), bool(r["decision"]))
    common = sorted(answers[stable].keys() & answers[canary].keys())
    s = np.array([answers[stable][k] for k in common]).reshape(-1, 2)
    c = np.array([answers[canary][k] for k in common]).reshape(-1, 2)
    return s[:, 0], s[:, 1].astype(bool), c[:, 0], c[:, 1].astype(bool)


def pair(records: Iterable[dict[str, Any]], stable: str, canary: str, since: str) -> Paired:
    """Join by request id the records each version logged at or after `since` (ISO time)."""
    return compare(*join(records, stable, canary, since))


def compare(
    stable_scores: np.ndarray,
    stable_alerts: np.ndarray,
    canary_scores: np.ndarray,
    canary_alerts: np.ndarray,
) -> Paired:
    """Row i of each array is the same request."""
    if len(stable_scores) == 0:
        return Paired(0, 0, 0, math.nan)
    shift = float(np.median(_logit(canary_scores) - _logit(stable_scores)))
    either = int((stable_alerts | canary_alerts).sum())
    return Paired(len(stable_scores), either, int((stable_alerts ^ canary_alerts).sum()), shift)


class Reader:
    """Reads a prediction-log folder incrementally: each call parses only the lines written
    since the last one, so judging every second does not re-read hours of log and take the
    CPU the services need."""

    def __init__(self, folder: Path, stable: str, canary: str, since: str) -> None:
        self.folder, self.since = folder, since
        self.versions = (stable, canary)
        self.offsets: dict[Path, int] = {}
        self.records: list[dict[str, Any]] = []
        self.start = datetime.fromisoformat(since).timestamp() if since else 0.0

    def read(self) -> Paired:
        for path in sorted(self.folder.glob("predictions-*.jsonl")):
            if path not in self.offsets and path.stat().st_mtime < self.start:
                continue  # last written before the canary started: nothing to pair
            with path.open("rb") as handle:
                handle.seek(self.offsets.get(path, 0))
                data = handle.read()
            end = data.rfind(b"\n") + 1  # a line still being written waits for the next read
            self.offsets[path] = self.offsets.get(path, 0) + end
            for line in data[:end].splitlines():
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if str(record.get("model_version")) in self.versions:
                    self.records.append(record)
        return pair(self.records, *self.versions, self.since)


def gates(
    paired: Paired, cfg: PairedGates, min_pairs: int, min_alerts: float, *, final: bool
) -> list[GateResult]:
    """Too few pairs fails; disagreement is judged once enough records were alerted on (on
    the last step it must be), as a share of a handful of alerts is noise."""
    out = [GateResult("min_pairs", paired.pairs >= min_pairs, paired.pairs, min_pairs, ">=")]
    shift = abs(paired.logit_shift)
    out.append(
        GateResult(
            "max_logit_shift", bool(shift <= cfg.max_logit_shift), shift, cfg.max_logit_shift, "<="
        )
    )
    if paired.either_alerted >= min_alerts or final:
        value = paired.disagreement
        out.append(
            GateResult(
                "max_alert_disagreement",
                bool(value <= cfg.max_alert_disagreement and paired.either_alerted >= min_alerts),
                value,
                cfg.max_alert_disagreement,
                "<=",
            )
        )
    return out
