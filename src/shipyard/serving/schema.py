"""Request and response models derived from the model's signature.

Strict on purpose: a missing field, a string for a number, NaN or Infinity, a number
outside the version's field range, an unknown extra field, an overlong string, an empty or
oversized batch all fail validation with the field's path, as a 4xx.
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
MAX_TEXT = 256  # characters in a string field: each one is logged with every prediction
REQUEST_ID = r"^[A-Za-z0-9._:-]{1,128}$"  # echoed in every answer and log line: kept short


def record_model(spec: ServingSpec) -> type[BaseModel]:
    fields: dict[str, Any] = {}
    for name, kind in spec.fields.items():
        if kind not in _TYPES:
            raise ValueError(f"field {name!r}: unsupported signature type {kind!r}")
        kind_type = _TYPES[kind]
        if name in spec.field_ranges:
            low, high = spec.field_ranges[name]
            kind_type = Annotated[kind_type, Field(ge=low, le=high)]
        elif kind == "string":
            kind_type = Annotated[kind_type, Field(max_length=MAX_TEXT)]
        fields[name] = (kind_type, ...)
    return create_model("Record", __config__=_CONFIG, **fields)


RequestId = Annotated[str, Field(pattern=REQUEST_ID)]


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
