"""The tags Shipyard keeps on a registry version, as one typed record.

Readers go through `VersionTags.of(version)`: one place names each tag, its type and what its
absence means, and a malformed value fails with the tag's name, not deep inside a caller.
Writers use `TAG` (field -> tag name), so a name is spelled once. Decision tags, which are
signed, are read through `grant`, not here.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from shipyard.errors import ShipyardError

TEST_METRIC_PREFIX = "shipyard.metrics.test."


def _tag(name: str, default: Any = None) -> Any:
    return Field(default, alias=f"shipyard.{name}")


class VersionTags(BaseModel):
    model_config = ConfigDict(populate_by_name=True, frozen=True, extra="ignore")

    # lineage (register)
    run_id: str | None = _tag("run_id")
    git_sha: str = _tag("git_sha", "unknown")
    data_hash: str = _tag("data_hash", "unknown")
    params_hash: str | None = _tag("params_hash")
    candidate: str | None = _tag("candidate")
    pipeline_run_id: str | None = _tag("pipeline_run_id")
    pipeline_gates: str = _tag("gates.pipeline", "missing")
    test_metrics: dict[str, float] = Field(default_factory=dict)
    # what later steps read back (register)
    reference_id: str = _tag("reference_id", "unknown")
    reference_uri: str | None = _tag("reference_uri")
    test_uri: str | None = _tag("test_uri")
    label_column: str | None = _tag("label_column")  # the frozen test set's label
    threshold_at_budget: float | None = _tag("threshold_at_budget")
    score_buckets: tuple[float, ...] | None = _tag("score_buckets")
    field_ranges: dict[str, tuple[float, float]] | None = _tag("field_ranges")
    # packaging and deployment
    bento_tag: str | None = _tag("bento_tag")
    served_buckets: tuple[float, ...] | None = _tag("serving.score_buckets")
    strategy: str = _tag("deploy.strategy", "canary")
    canary_failed_gate: str | None = _tag("canary.failed_gate")
    rolled_back: str | None = _tag("rolled_back")  # why it stopped being champion

    @field_validator("score_buckets", "served_buckets", "field_ranges", mode="before")
    @classmethod
    def _json(cls, value: Any) -> Any:
        return json.loads(value) if isinstance(value, str) else value

    @classmethod
    def of(cls, version: Any) -> VersionTags:
        """The typed tags of an MLflow ModelVersion (or of a plain tag dict)."""
        raw = dict(version if isinstance(version, dict) else version.tags)
        metrics = {
            k.removeprefix(TEST_METRIC_PREFIX): v
            for k, v in raw.items()
            if k.startswith(TEST_METRIC_PREFIX)
        }
        try:
            return cls.model_validate({**raw, "test_metrics": metrics})
        except ValidationError as err:
            first = err.errors()[0]
            where = ".".join(str(part) for part in first["loc"])
            number = getattr(version, "version", "?")
            raise ShipyardError(f"version {number}: tag {where}: {first['msg']}") from None


TAG: dict[str, str] = {
    name: str(field.alias) for name, field in VersionTags.model_fields.items() if field.alias
}
