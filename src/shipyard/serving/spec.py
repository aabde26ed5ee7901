"""What a packaged service serves: one model version, its fields, threshold and lineage.

Written at packaging time next to the service inside the Bento, read when the service starts.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator

from shipyard.serving.buckets import check_bounds

SPEC_ENV = "SHIPYARD_SERVING_SPEC"
SPEC_FILE = "serving_spec.json"


class ServingSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    model_name: str
    model_version: str
    bento_model: str  # tag in the BentoML model store
    fields: dict[str, str]  # name -> MLflow type (double, long, string, boolean)
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

    def write(self, path: Path) -> None:
        path.write_text(self.model_dump_json(indent=2) + "\n")


def load_spec(path: Path | None = None) -> ServingSpec:
    path = path or Path(os.environ.get(SPEC_ENV, SPEC_FILE))
    return ServingSpec.model_validate(json.loads(path.read_text()))
