"""The data contract shared by validate, serve and drift: declared columns, types and ranges.

`field_ranges` carries the contract's ranges, and the training data's, to the service.

`apply_contract` turns raw rows (CSV text or parquet values) into typed columns, and raises
`ValidationFailed` naming the source, the column and the rule at the first broken row.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from shipyard.config import ColumnSpec, DataSection
from shipyard.errors import ShipyardError, ValidationFailed

_TRUE = {"true", "1", "yes"}
_FALSE = {"false", "0", "no"}


def _first_bad(mask: pd.Series | np.ndarray, raw: pd.Series) -> str:
    pos = int(np.flatnonzero(np.asarray(mask))[0])
    return f"row {pos + 1} (value {raw.iloc[pos]!r})"


def coerce(raw: pd.Series, spec: ColumnSpec) -> tuple[pd.Series, np.ndarray]:
    """Typed column plus a mask of values that were present but not of the declared type
    (an array: a Series of it cost a stream batch 25 us a column)."""
    if spec.type in ("int", "float") and raw.dtype == np.float64:
        # Already numbers (the stream's events, Arrow's parsed columns): only infinities and,
        # for an int, fractions are bad. The same masks as below, at a tenth of their cost.
        v = raw.to_numpy()
        finite = np.isfinite(v)
        wrong = ~finite & ~np.isnan(v)
        if spec.type == "int":
            wrong |= finite & (v != np.round(v))
        return raw, wrong
    present = raw.notna()
    if spec.type in ("int", "float"):
        values = pd.to_numeric(raw, errors="coerce").astype("float64")
        bad = present & ~np.isfinite(values.fillna(0.0)) | (present & values.isna())
        if spec.type == "int":
            bad |= present & values.notna() & (values != np.round(values))
        return values, bad.to_numpy(dtype=bool)
    if spec.type == "bool":
        text = raw.astype("string").str.strip().str.lower()
        values = text.map(lambda v: True if v in _TRUE else False if v in _FALSE else pd.NA)
        return values.astype("boolean"), (present & values.isna()).to_numpy(dtype=bool)
    if spec.type == "datetime":
        stamps: pd.Series = (
            raw
            if pd.api.types.is_datetime64_any_dtype(raw)
            else pd.to_datetime(raw.astype("string"), format="ISO8601", errors="coerce")
        )
        return stamps, (present & stamps.isna()).to_numpy(dtype=bool)
    return raw.astype("string"), np.zeros(len(raw), dtype=bool)


def _label_text(value: object) -> str:
    if isinstance(value, float | np.floating) and float(value).is_integer():
        return str(int(value))
    return str(value)


def apply_contract(frame: pd.DataFrame, data: DataSection, source: str) -> pd.DataFrame:
    """Check one file's rows against the contract; return them typed, declared columns only."""
    missing = [c for c in data.columns if c not in frame.columns]
    if missing:
        raise ValidationFailed(source, missing[0], "columns", "required column is missing")
    typed = {}
    for name, spec in data.columns.items():
        raw = frame[name]
        values, bad = coerce(raw, spec)
        if bad.any():
            raise ValidationFailed(
                source, name, "type", f"expected {spec.type}, got {_first_bad(bad, raw)}"
            )
        nulls = values.isna()
        if name == data.target and nulls.any():
            raise ValidationFailed(
                source, name, "label", f"missing label at {_first_bad(nulls, raw)}"
            )
        if nulls.any() and not spec.nullable:
            raise ValidationFailed(source, name, "nulls", f"null value at {_first_bad(nulls, raw)}")
        if spec.min is not None and (below := values < spec.min).any():
            raise ValidationFailed(
                source, name, "range", f"below min {spec.min} at {_first_bad(below, raw)}"
            )
        if spec.max is not None and (above := values > spec.max).any():
            raise ValidationFailed(
                source, name, "range", f"above max {spec.max} at {_first_bad(above, raw)}"
            )
        if spec.categories is not None:
            unknown = values.notna() & ~values.isin(spec.categories)
            if unknown.any():
                raise ValidationFailed(
                    source, name, "categories", f"unknown category at {_first_bad(unknown, raw)}"
                )
        typed[name] = values.astype("Int64") if spec.type == "int" else values
    out = pd.DataFrame(typed)
    labels = {str(data.positive_label), str(data.negative_label)}
    seen = out[data.target].map(_label_text)
    wrong = ~seen.isin(labels)
    if wrong.any():
        raise ValidationFailed(
            source,
            data.target,
            "label",
            f"label not in {sorted(labels)} at {_first_bad(wrong, frame[data.target])}",
        )
    out[data.target] = (seen == str(data.positive_label)).astype("int64")
    return out


def _no_missing(mask: pd.Series | np.ndarray) -> pd.Series | np.ndarray:
    """A comparison's mask with missing values as False (an array has none)."""
    return mask if isinstance(mask, np.ndarray) else mask.fillna(False)


def check_rows(
    frame: pd.DataFrame, data: DataSection, source: str
) -> tuple[pd.DataFrame, pd.Series]:
    """Rows to score, checked one by one: the typed declared columns, and per row the first
    broken rule (`column: rule: detail`) or <NA>.

    A missing column is the file's fault and raises, naming it; a bad value is one row's,
    which batch scoring writes to its rejects. The label may be absent or empty: rows being
    scored have none yet, and where one is known it feeds the risk windows as in training.
    """
    needed = [c for c in data.columns if c != data.target]
    missing = [c for c in needed if c not in frame.columns]
    if missing:
        raise ValidationFailed(source, missing[0], "columns", "required column is missing")
    # Reasons gather in a plain array: a masked write to a pandas Series costs about 0.4 ms,
    # which the stream, checking a few events at a time, paid 16 times per event.
    found = np.full(len(frame), None, dtype=object)
    unset = np.ones(len(frame), dtype=bool)  # rows with no reason yet: the first one stands

    def broken(mask: pd.Series | np.ndarray, text: str) -> None:
        hit = np.asarray(mask, dtype=bool) & unset
        found[hit] = text
        unset[hit] = False

    typed = {}
    for name, spec in data.columns.items():
        if name not in frame.columns:  # the label, unknown at scoring time
            typed[name] = pd.Series(np.nan, index=frame.index)
            continue
        values, bad = coerce(frame[name], spec)
        broken(bad, f"{name}: type: expected {spec.type}")
        # Numbers as a plain array, where a NaN compares False as the missing value it is:
        # each pandas mask cost about 0.1 ms, paid per column of every stream batch.
        numeric = spec.type in ("int", "float")
        v = values.to_numpy(dtype="float64") if numeric else values
        if name != data.target and not spec.nullable:
            broken(pd.isna(v) & ~bad, f"{name}: nulls: null value")
        if spec.min is not None:
            broken(_no_missing(v < spec.min), f"{name}: range: below min {spec.min}")
        if spec.max is not None:
            broken(_no_missing(v > spec.max), f"{name}: range: above max {spec.max}")
        if spec.categories is not None:
            broken(values.notna() & ~values.isin(spec.categories), f"{name}: categories: unknown")
        if spec.type == "int" and values.dtype != np.float64:
            values = values.astype("float64")
        typed[name] = values
    out = pd.DataFrame(typed, index=frame.index)
    # Rows being scored mostly carry no label (a stream's events never do): nothing to check,
    # and the label's map and masks cost more than every other column's checks together.
    if data.target in frame.columns and out[data.target].notna().any():
        labels_seen = out[data.target]
        text = labels_seen.map({v: _label_text(v) for v in labels_seen.dropna().unique()})
        known = text.notna()
        labels = {str(data.positive_label), str(data.negative_label)}
        broken(known & ~text.isin(labels), f"{data.target}: label: not in {sorted(labels)}")
        out[data.target] = (text == str(data.positive_label)).astype("float64").where(known)
    return out, pd.Series(found, index=frame.index, dtype="string")


WIDEN = 10.0  # spans of the training values a served number may lie beyond them


def field_ranges(
    train: pd.DataFrame, fields: list[str], columns: dict[str, ColumnSpec]
) -> dict[str, tuple[float, float]]:
    """What each numeric field may be when served: the contract's bounds, else the training
    values' widened by ten spans on each side.

    A finite but huge number (1e308) overflows a model into a non-finite score; ten spans
    still admit honest drift, which the drift checks are there to see, not the service.
    """
    out = {}
    for name in fields:
        values = pd.to_numeric(train[name], errors="coerce").astype("float64").to_numpy()
        finite = values[np.isfinite(values)]
        if finite.size == 0:
            raise ShipyardError(f"field {name}: no finite training value to derive a range from")
        low, high = float(finite.min()), float(finite.max())
        span = high - low or max(abs(high), 1.0)
        spec = columns.get(name)
        low = spec.min if spec is not None and spec.min is not None else low - WIDEN * span
        high = spec.max if spec is not None and spec.max is not None else high + WIDEN * span
        out[name] = (float(low), float(high))
    return out


def dump_ranges(ranges: dict[str, tuple[float, float]]) -> str:
    return json.dumps({k: list(v) for k, v in ranges.items()}, separators=(",", ":"))
