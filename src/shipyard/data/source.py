"""Read the raw source named by `data.path`: one file, or every file of the format in a folder."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pandas as pd

from shipyard.config import DataSection
from shipyard.errors import ValidationFailed

_SUFFIX = {"csv": ".csv", "parquet": ".parquet"}


def source_files(data: DataSection, root: Path = Path()) -> list[Path]:
    """Files in name order; retraining only ever adds files, so order is stable over time."""
    path = root / data.path
    if path.is_file():
        return [path]
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix == _SUFFIX[data.format])
        if not files:
            raise ValidationFailed(str(path), None, "format", f"no {_SUFFIX[data.format]} files")
        return files
    raise ValidationFailed(str(path), None, "exists", "no such file or folder")


def _read_csv(path: Path) -> pd.DataFrame:
    head = path.read_bytes()[:4096]
    if b"\x00" in head:
        raise ValidationFailed(str(path), None, "format", "not a CSV file (binary content)")
    try:
        return pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
    except pd.errors.EmptyDataError:
        raise ValidationFailed(str(path), None, "min_rows", "file is empty") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as err:
        reason = str(err).splitlines()[0]
        raise ValidationFailed(
            str(path), None, "format", f"not a valid CSV file ({reason})"
        ) from None


def _read_parquet(path: Path) -> pd.DataFrame:
    try:
        return pd.read_parquet(path)
    except Exception as err:  # pyarrow raises several unrelated types for a bad file
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ValidationFailed(
            str(path), None, "format", f"not a parquet file ({reason})"
        ) from None


def read_files(data: DataSection, root: Path = Path()) -> Iterator[tuple[Path, pd.DataFrame]]:
    reader = _read_csv if data.format == "csv" else _read_parquet
    for path in source_files(data, root):
        frame = reader(path)
        if frame.empty:
            raise ValidationFailed(str(path), None, "min_rows", "file has no rows")
        yield path, frame
