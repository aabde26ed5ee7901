"""Typed `registry/policy.yaml`: promotion, serving, canary and Kubernetes rules, checked at load
with the bad key's path, like `params.yaml` (see `config`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from shipyard.config import MetricName, Strict, _parse, _read_yaml

DEFAULT_POLICY = Path("registry/policy.yaml")


class NoRegressionConfig(Strict):
    """Challenger vs champion on the challenger's frozen test set, by paired bootstrap."""

    metric: Literal["roc_auc", "average_precision", "precision_at_budget"]
    tolerance: float = Field(ge=0, lt=1)
    confidence: float = Field(gt=0.5, lt=1)
    resamples: int = Field(ge=50)
    seed: int = 0


class CalibrationConfig(Strict):
    """A proper scoring rule, by the same paired bootstrap: ranking metrics cannot see a
    challenger whose scores are shrunk or inflated while their order stays the same."""

    metric: Literal["brier", "log_loss"]
    # The lower end of the interval of (challenger - champion) / champion must stay below it.
    max_relative_increase: float = Field(gt=0, lt=1)


class AlertVolumeConfig(Strict):
    """Alerts each model raises on the frozen test set at its own decision threshold."""

    max_ratio: float = Field(gt=1)  # challenger / champion, either way


class PromotionPolicy(Strict):
    min: dict[MetricName, float] = Field(default_factory=dict)
    max: dict[MetricName, float] = Field(default_factory=dict)
    no_regression: NoRegressionConfig
    calibration: CalibrationConfig
    alert_volume: AlertVolumeConfig
    alert_budget: float = Field(gt=0, lt=1)


class ServingPolicy(Strict):
    """`at_budget`: the version's score threshold at the evaluation alert budget."""

    decision_threshold: float | Literal["at_budget"] = "at_budget"
    max_batch: int = Field(ge=1, default=1000)
    max_body_bytes: int = Field(ge=1024, default=2_000_000)
    max_latency_ms: int = Field(ge=1, default=1000)


class CanaryGates(Strict):
    """Canary vs stable over the same window; every bound is a maximum."""

    max_error_rate: float = Field(ge=0, le=1)
    max_p99_ms: float = Field(gt=0)
    max_p99_ratio: float = Field(gt=0)
    max_score_psi: float = Field(gt=0)
    max_score_ks: float = Field(gt=0, le=1)
    # Alert rate, canary against stable: rejected once a one-sided test at `confidence` says
    # it is more than `max_positive_rate_ratio` times stable's, or less than its inverse.
    max_positive_rate_ratio: float = Field(gt=1)
    confidence: float = Field(gt=0.5, lt=1)
    # No canary passes before this many alerts were expected of it at stable's rate.
    min_expected_positives: float = Field(gt=0)

    @field_validator("min_expected_positives")
    @classmethod
    def _can_see_silence(cls, value: float, info: ValidationInfo) -> float:
        """Below ratio * z**2 expected alerts, a canary that never alerts would pass."""
        from statistics import NormalDist

        ratio, confidence = info.data.get("max_positive_rate_ratio"), info.data.get("confidence")
        if ratio is None or confidence is None:
            return value
        needed = ratio * NormalDist().inv_cdf(confidence) ** 2
        if value < needed:
            raise ValueError(
                f"must be at least {needed:.1f} at max_positive_rate_ratio {ratio} and "
                f"confidence {confidence}, or a canary that never alerts can pass"
            )
        return value


class PairedGates(Strict):
    """Shadow mode only: both variants scored the same requests, joined by request id.

    The most powerful comparison there is: no sampling difference between the two sides.
    """

    # Of the records either variant alerted on, the share on which they disagree.
    max_alert_disagreement: float = Field(gt=0, le=1)
    # |median of canary - stable log-odds| over the pairs: 1 is scores off by a factor e.
    max_logit_shift: float = Field(gt=0)


class CanaryPolicy(Strict):
    steps: list[int] = Field(min_length=1)  # canary weight in percent, ending at 100
    step_seconds: float = Field(gt=0)
    min_requests: int = Field(ge=1)
    failures_tolerated: int = Field(ge=0)
    gates: CanaryGates
    paired: PairedGates

    @field_validator("failures_tolerated")
    @classmethod
    def _can_reject(cls, value: int, info: ValidationInfo) -> int:
        steps = info.data.get("steps")
        if steps is not None and value >= len(steps):
            raise ValueError(
                f"{value} failed steps tolerated out of {len(steps)}: no canary could ever be "
                f"rejected; use at most {len(steps) - 1}"
            )
        return value

    @model_validator(mode="after")
    def _steps_rise_to_100(self) -> CanaryPolicy:
        if self.steps != sorted(set(self.steps)) or self.steps[-1] != 100 or self.steps[0] <= 0:
            raise ValueError("steps must rise strictly from above 0 to 100")
        return self


class KubernetesPolicy(Strict):
    """The Argo Rollouts target: where the rendered manifests run and who answers PromQL."""

    namespace: str = Field(default="shipyard", pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    replicas: int = Field(default=4, ge=1)
    port: int = Field(default=3000, ge=1, le=65535)
    prometheus: str = Field(
        default="http://prometheus-server.monitoring.svc", pattern=r"^https?://"
    )
    cpu: str = "500m"
    memory: str = "1Gi"
    kubernetes_version: str = Field(default="1.33.0", pattern=r"^\d+\.\d+\.\d+$")


AlertName = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]


class AlertsPolicy(Strict):
    """What the webhook receiver does when Alertmanager reports one of these alerts firing on
    the @champion's version (`POST /alerts`). Alerts on any other version change nothing: a
    canary's own gates answer for it."""

    rollback: list[AlertName] = Field(default_factory=list)  # @previous back to @champion
    retrain: list[AlertName] = Field(default_factory=list)  # `drift-detected`, or retrain here

    @model_validator(mode="after")
    def _one_action_each(self) -> AlertsPolicy:
        both = sorted(set(self.rollback) & set(self.retrain))
        if both:
            raise ValueError(f"{both[0]} is under both rollback and retrain; pick one")
        return self


class Policy(Strict):
    promotion: PromotionPolicy
    serving: ServingPolicy = ServingPolicy()
    canary: CanaryPolicy
    kubernetes: KubernetesPolicy = KubernetesPolicy()
    alerts: AlertsPolicy = AlertsPolicy()


def load_policy(path: Path | str = DEFAULT_POLICY) -> Policy:
    return _parse(Policy, _read_yaml(Path(path)), str(path))
