"""validate: schema and quality gate between raw data and everything downstream."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from shipyard.artifacts import Layout, atomic_dir, progress, write_json
from shipyard.config import DataSection, Params, ValidateSection
from shipyard.data.source import read_files
from shipyard.errors import ValidationFailed
from shipyard.schema import apply_contract


def check_dataset(
    frame: pd.DataFrame, data: DataSection, rules: ValidateSection, source: str
) -> None:
    """Rules that only make sense on all files together."""
    if len(frame) < rules.min_rows:
        raise ValidationFailed(
            source, None, "min_rows", f"{len(frame)} rows, need at least {rules.min_rows}"
        )
    if not rules.allow_duplicate_ids:
        dup = frame[data.id].duplicated()
        if dup.any():
            value = frame.loc[dup, data.id].iloc[0]
            raise ValidationFailed(source, data.id, "duplicates", f"id {value} appears twice")
    rate = float(frame[data.target].mean())
    if not rules.min_positive_rate <= rate <= rules.max_positive_rate:
        raise ValidationFailed(
            source,
            data.target,
            "class_balance",
            f"positive rate {rate:.4%} outside "
            f"[{rules.min_positive_rate:.4%}, {rules.max_positive_rate:.4%}]",
        )


def validate(params: Params, root: Path = Path()) -> tuple[pd.DataFrame, dict[str, Any]]:
    data = params.data
    parts, files = [], []
    for path, raw in read_files(data, root):
        progress("validate", f"{path}: {len(raw)} rows")
        parts.append(apply_contract(raw, data, str(path)))
        files.append(
            {
                "path": str(path),
                "rows": len(raw),
                "ignored_columns": sorted(set(raw.columns) - set(data.columns)),
            }
        )
    frame = pd.concat(parts, ignore_index=True)
    check_dataset(frame, data, params.validate_, data.path)
    frame = frame.sort_values([data.timestamp, data.id], kind="stable").reset_index(drop=True)
    report = {
        "passed": True,
        "rows": len(frame),
        "files": files,
        "positive_rate": float(frame[data.target].mean()),
        "time_range": [str(frame[data.timestamp].min()), str(frame[data.timestamp].max())],
        "nulls": {c: int(n) for c, n in frame.isna().sum().items()},
        "rules": rules_checked(data, params.validate_),
    }
    return frame, report


def rules_checked(data: DataSection, rules: ValidateSection) -> list[str]:
    """The rules this configuration actually applied, for the report: no rule it skipped."""
    specs = data.columns.values()
    applied = {
        "columns": True,
        "type": True,
        "nulls": any(not c.nullable for c in specs),
        "label": True,
        "range": any(c.min is not None or c.max is not None for c in specs),
        "categories": any(c.categories is not None for c in specs),
        "duplicates": not rules.allow_duplicate_ids,
        "min_rows": True,
        "class_balance": True,
    }
    return [rule for rule, used in applied.items() if used]


def run(params: Params, layout: Layout) -> None:
    with atomic_dir(layout.validated) as out:  # a failed check also removes a stale output
        frame, report = validate(params)
        frame.to_parquet(out / "data.parquet", index=False)
        write_json(out / "report.json", report)
    progress(
        "validate", f"passed: {report['rows']} rows, positive rate {report['positive_rate']:.3%}"
    )
