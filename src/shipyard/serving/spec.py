"""What a packaged service serves: one model version, its fields, threshold and lineage.

Written at packaging time next to the service inside the Bento, read when the service starts.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from shipyard.serving.buckets import check_bounds

SPEC_ENV = "SHIPYARD_SERVING_SPEC"
SPEC_FILE = "serving_spec.json"
NUMERIC = ("double", "float", "long", "integer")


class ServingSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    model_name: str
    model_version: str
    bento_model: str  # tag in the BentoML model store
    fields: dict[str, str]  # name -> MLflow type (double, long, string, boolean)
    # name -> (low, high) for every numeric field: the version's `shipyard.field_ranges`.
    field_ranges: dict[str, tuple[float, float]]
    threshold: float = Field(ge=0, le=1)
    labels: dict[str, str] = {}
    max_batch: int = Field(ge=1, default=1000)
    max_latency_ms: int = Field(ge=1, default=1000)
    max_body_bytes: int = Field(ge=1024, default=2_000_000)
    # Shared with every variant this one is compared with (see `buckets`).
    score_buckets: tuple[float, ...]

    @field_validator("score_buckets")
    @classmethod
    def _rising(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        return check_bounds(value)

    @model_validator(mode="after")
    def _every_number_bounded(self) -> ServingSpec:
        """A finite number past what the model has seen must be a 400, never the model's 500."""
        for name, kind in self.fields.items():
            if kind not in NUMERIC:
                continue
            if name not in self.field_ranges:
                raise ValueError(f"field_ranges.{name}: numeric field {name} has no range")
            low, high = self.field_ranges[name]
            if not (math.isfinite(low) and math.isfinite(high) and low <= high):
                raise ValueError(f"field_ranges.{name}: [{low}, {high}] is not a finite range")
        return self

    def write(self, path: Path) -> None:
        path.write_text(self.model_dump_json(indent=2) + "\n")


def load_spec(path: Path | None = None) -> ServingSpec:
    path = path or Path(os.environ.get(SPEC_ENV, SPEC_FILE))
    return ServingSpec.model_validate(json.loads(path.read_text()))
