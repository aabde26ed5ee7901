"""Typed `monitoring/policy.yaml`: how the drift job samples, judges and triggers."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from shipyard.config import Strict, _parse, _read_yaml

DEFAULT_MONITORING_POLICY = Path("monitoring/policy.yaml")
_DURATION = re.compile(r"^(\d+)([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}

# Evidently 0.7 stat-test names we allow per column type (evidently.legacy stattests).
NumMethod = Literal["wasserstein", "ks", "psi", "jensenshannon", "kl_div", "anderson"]
CatMethod = Literal["jensenshannon", "psi", "chisquare", "z", "kl_div", "TVD"]


def parse_duration(text: str) -> timedelta:
    match = _DURATION.match(text.strip())
    if not match:
        raise ValueError(f"'{text}' is not a duration like 30m, 6h or 7d")
    return timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})


class WindowPolicy(Strict):
    min_rows: int = Field(ge=1)  # fewer rows: the window cannot be judged
    sample_rows: int = Field(ge=100)  # larger windows are sampled down to this many rows
    seed: int = 0


class DriftPolicy(Strict):
    numerical_method: NumMethod
    numerical_threshold: float = Field(gt=0)
    categorical_method: CatMethod
    categorical_threshold: float = Field(gt=0)
    score_method: NumMethod
    score_threshold: float = Field(gt=0)
    drift_share: float = Field(gt=0, le=1)  # share of drifted features that marks the window
    exclude: list[str] = Field(default_factory=list)  # features whose drift is not drift


QualityMetric = Literal["roc_auc", "average_precision", "precision_at_budget"]


class QualityPolicy(Strict):
    max_missing_share: float = Field(ge=0, le=1)
    max_out_of_range_share: float = Field(ge=0, le=1)
    max_unseen_category_share: float = Field(ge=0, le=1)
    max_drop: dict[QualityMetric, float] = Field(default_factory=dict)
    # The label-free estimate (`estimate`) against the same estimate on the reference.
    max_estimated_drop: dict[QualityMetric, Annotated[float, Field(gt=0)]] = Field(
        default_factory=dict
    )
    min_labelled_rows: int = Field(ge=1)


class TriggerPolicy(Strict):
    drifted_windows: int = Field(ge=1)  # K drifted windows ...
    of_last: int = Field(ge=1)  # ... among the last M judged ones
    cooldown: str  # after a trigger, window time during which nothing triggers again
    retrain: bool = False  # `shipyard drift check` runs `shipyard retrain` on a trigger

    @field_validator("cooldown")
    @classmethod
    def _duration(cls, value: str) -> str:
        parse_duration(value)
        return value

    @model_validator(mode="after")
    def _k_of_m(self) -> TriggerPolicy:
        if self.drifted_windows > self.of_last:
            raise ValueError("drifted_windows cannot exceed of_last")
        return self


class MonitoringPolicy(Strict):
    window: WindowPolicy
    drift: DriftPolicy
    quality: QualityPolicy
    trigger: TriggerPolicy
    workspace: str = "monitoring/workspace"
    reports: str = "monitoring/reports"


def load_monitoring_policy(path: Path | str = DEFAULT_MONITORING_POLICY) -> MonitoringPolicy:
    return _parse(MonitoringPolicy, _read_yaml(Path(path)), str(path))
