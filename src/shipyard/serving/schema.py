"""Request and response models derived from the model's signature.

Strict on purpose: a missing field, a string for a number, NaN or Infinity, an unknown extra
field, an empty or oversized batch all fail validation with the field's path, as a 4xx.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    create_model,
)

from shipyard.serving.spec import ServingSpec

_TYPES: dict[str, Any] = {
    "double": StrictFloat,  # strict still takes 3 for 3.0, never "3"
    "float": StrictFloat,
    "long": StrictInt,
    "integer": StrictInt,
    "string": StrictStr,
    "boolean": StrictBool,
}
_CONFIG = ConfigDict(extra="forbid", allow_inf_nan=False)


def record_model(spec: ServingSpec) -> type[BaseModel]:
    fields: dict[str, Any] = {}
    for name, kind in spec.fields.items():
        if kind not in _TYPES:
            raise ValueError(f"field {name!r}: unsupported signature type {kind!r}")
        fields[name] = (_TYPES[kind], ...)
    return create_model("Record", __config__=_CONFIG, **fields)


def batch_type(spec: ServingSpec, record: type[BaseModel]) -> Any:
    return Annotated[list[record], Field(min_length=1, max_length=spec.max_batch)]  # type: ignore[valid-type]


class Prediction(BaseModel):
    request_id: str
    score: float
    decision: bool
    model_name: str
    model_version: str


class BatchPrediction(BaseModel):
    predictions: list[Prediction]
