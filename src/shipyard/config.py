"""Typed `params.yaml`: every stage reads its own section, and a bad key fails fast by path."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)

from shipyard.errors import ConfigError

DEFAULT_PARAMS = Path("params.yaml")
M = TypeVar("M", bound=BaseModel)


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --- base -------------------------------------------------------------------------------


class TrackingConfig(Strict):
    """Embedded defaults; MLFLOW_TRACKING_URI overrides `uri` to use a server."""

    uri: str = "sqlite:///.shipyard/mlflow.db"
    artifact_root: str = ".shipyard/mlartifacts"
    experiment: str = "fraud-detector"


class BaseSection(Strict):
    seed: int
    model_name: str = Field(min_length=1)
    tracking: TrackingConfig


# --- data: the contract shared by validate, serve and drift -----------------------------

ColumnType = Literal["int", "float", "bool", "string", "datetime"]


class ColumnSpec(Strict):
    type: ColumnType
    min: float | None = None
    max: float | None = None
    nullable: bool = False
    categories: list[str] | None = None


class FeatureSpec(Strict):
    numeric: list[str] = []
    categorical: list[str] = []


class DataSection(Strict):
    path: str
    format: Literal["csv", "parquet"]
    id: str
    timestamp: str
    target: str
    positive_label: int | str = 1
    negative_label: int | str = 0
    columns: dict[str, ColumnSpec]
    features: FeatureSpec

    @model_validator(mode="after")
    def _columns_declared(self) -> DataSection:
        named = [self.id, self.timestamp, self.target, *self.features.numeric]
        named += self.features.categorical
        missing = [c for c in named if c not in self.columns]
        if missing:
            raise ValueError(f"columns used but not declared in data.columns: {missing}")
        if self.columns[self.timestamp].type != "datetime":
            raise ValueError(f"timestamp column '{self.timestamp}' must have type datetime")
        return self


# --- stages -----------------------------------------------------------------------------


class ValidateSection(Strict):
    min_rows: int = Field(ge=1)
    min_positive_rate: float = Field(ge=0, le=1)
    max_positive_rate: float = Field(ge=0, le=1)
    allow_duplicate_ids: bool = False


class SplitConfig(Strict):
    """Shares of the time axis; `gap_days` of rows are dropped before each later split so a
    model never trains on labels that would not have arrived by the time it scores."""

    validation: float = Field(gt=0, lt=0.5)
    test: float = Field(gt=0, lt=0.5)
    gap_days: int = Field(ge=0, default=0)


class SpendingConfig(Strict):
    """Per-entity count and mean amount over trailing windows (label-free)."""

    entity: str
    amount: str
    windows_days: list[int] = Field(min_length=1)


class RiskConfig(Strict):
    """Per-entity positive rate over trailing windows, shifted by the label delay."""

    entity: str
    delay_days: int = Field(ge=1)
    windows_days: list[int] = Field(min_length=1)


class FeaturizeSection(Strict):
    split: SplitConfig
    calendar: bool = False
    spending: SpendingConfig | None = None
    risk: RiskConfig | None = None


class HistGradientBoostingSpec(Strict):
    type: Literal["hist_gradient_boosting"]
    learning_rate: float = Field(gt=0)
    max_iter: int = Field(ge=1)
    max_leaf_nodes: int = Field(ge=2)
    l2_regularization: float = Field(ge=0, default=0.0)


class LogisticRegressionSpec(Strict):
    type: Literal["logistic_regression"]
    C: float = Field(gt=0)
    max_iter: int = Field(ge=1, default=1000)
    class_weight: Literal["balanced"] | None = None


class TorchMLPSpec(Strict):
    type: Literal["torch_mlp"]
    hidden_sizes: list[int] = Field(min_length=1)
    learning_rate: float = Field(gt=0)
    weight_decay: float = Field(ge=0, default=0.0)
    batch_size: int = Field(ge=1)
    max_epochs: int = Field(ge=1)
    patience: int = Field(ge=1)
    validation_fraction: float = Field(gt=0, lt=0.5)


CandidateSpec = Annotated[
    HistGradientBoostingSpec | LogisticRegressionSpec | TorchMLPSpec,
    Field(discriminator="type"),
]


class TrainSection(Strict):
    candidates: dict[str, CandidateSpec] = Field(min_length=1)


MetricName = Literal[
    "roc_auc", "average_precision", "precision_at_budget", "brier", "latency_ms_p50"
]


class EvaluateSection(Strict):
    select_by: Literal["roc_auc", "average_precision", "precision_at_budget"]
    alert_budget: float = Field(gt=0, lt=1)
    latency_rows: int = Field(ge=1)


class RegisterSection(Strict):
    """Absolute gates on the best candidate's test metrics."""

    min: dict[MetricName, float] = {}
    max: dict[MetricName, float] = {}
    reference_rows: int = Field(ge=1)


class Params(Strict):
    base: BaseSection
    data: DataSection
    validate_: ValidateSection = Field(alias="validate")
    featurize: FeaturizeSection
    train: TrainSection
    evaluate: EvaluateSection
    register_: RegisterSection = Field(alias="register")

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @model_validator(mode="after")
    def _history_columns_declared(self) -> Params:
        cols = self.data.columns
        for name, section in (("spending", self.featurize.spending), ("risk", self.featurize.risk)):
            if section is None:
                continue
            used = [section.entity] + (
                [section.amount] if isinstance(section, SpendingConfig) else []
            )
            for col in used:
                if col not in cols:
                    raise ValueError(f"featurize.{name} uses column '{col}' not in data.columns")
        return self


def _format(err: ValidationError, source: str) -> str:
    first = err.errors()[0]
    path = ".".join(str(p) for p in first["loc"]) or "<root>"
    more = len(err.errors()) - 1
    suffix = f" (+{more} more)" if more else ""
    return f"{source}: {path}: {first['msg']}{suffix}"


def parse_params(raw: Any, source: str = "params.yaml") -> Params:
    return _parse(Params, raw, source)


def _read_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({err.__class__.__name__})") from None


def _parse(model: type[M], raw: Any, source: str) -> M:
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level")
    try:
        return model.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(_format(err, source)) from None


def load_params(path: Path | str = DEFAULT_PARAMS) -> Params:
    return parse_params(_read_yaml(Path(path)), str(path))


# --- registry/policy.yaml: what CI's promotion decisions are held to --------------------
