"""The service's prediction log, read by time window and model version.

A corrupt or truncated line (a server killed mid-write) is counted and skipped, never fatal.
Files written before the window starts are skipped unopened, so reading a recent window
stays cheap however long the log grows.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

BLOCK_BYTES = 4 << 20  # one Arrow batch per block: fewer Python steps, bounded memory
_META = ("request_id", "timestamp", "model_name", "model_version", "score", "decision")


@dataclass(frozen=True)
class LogWindow:
    frame: pd.DataFrame  # request_id, timestamp, model_version, score, decision, features...
    rows: int  # records in the window; `frame` holds a uniform sample of them when capped
    corrupt: int  # lines that were not a whole, valid record
    files: int  # files read
    features: list[str]  # feature names the records carry (union)


class _Fallback(Exception):
    """This file needs the line-by-line reader."""


class _Sample:
    """A uniform sample of at most `k` rows from a stream: the rows with the k smallest random
    keys. Rows whose key cannot make the cut are dropped before they become pandas rows, so
    memory follows `k`, not the size of the window."""

    def __init__(self, k: int | None, seed: int) -> None:
        self.k, self.rng = k, np.random.default_rng(seed)
        self.parts: list[pd.DataFrame] = []
        self.size = self.seen = 0
        self.cut: float | None = None

    def mark(self) -> tuple[Any, ...]:
        return (list(self.parts), self.size, self.seen, self.cut, self.rng.bit_generator.state)

    def restore(self, mark: tuple[Any, ...]) -> None:
        self.parts, self.size, self.seen, self.cut, state = mark
        self.rng.bit_generator.state = state

    def add(self, rows: Any, convert: Any) -> None:
        """`rows` is an Arrow table or a DataFrame; `convert` turns the kept ones into pandas."""
        n = len(rows)
        if n == 0:
            return
        self.seen += n
        keys = self.rng.random(n)
        if self.cut is not None:
            keep = keys < self.cut
            rows = rows.filter(keep) if not isinstance(rows, pd.DataFrame) else rows[keep]
            keys = keys[keep]
        if len(keys) == 0:
            return
        self.parts.append(convert(rows).assign(_key=keys))
        self.size += len(keys)
        if self.k is not None and self.size > 2 * self.k:
            merged = pd.concat(self.parts, ignore_index=True).nsmallest(self.k, "_key")
            self.parts, self.size, self.cut = [merged], len(merged), float(merged["_key"].max())

    def result(self) -> pd.DataFrame:
        if not self.parts:
            return pd.DataFrame()
        frame = pd.concat(self.parts, ignore_index=True)
        if self.k is not None and len(frame) > self.k:
            frame = frame.nsmallest(self.k, "_key")
        return frame.drop(columns="_key").sort_values("timestamp", kind="stable")


def _valid(record: Any) -> bool:
    return (
        isinstance(record, dict)
        and all(k in record for k in _META)
        and isinstance(record.get("features"), dict)
        and isinstance(record.get("score"), int | float)
    )


def _read_slow(path: Path) -> tuple[pd.DataFrame, int]:
    """Line by line, for a file with a bad line in it."""
    rows, corrupt = [], 0
    with path.open("rb") as handle:
        for line in handle:
            try:
                record = json.loads(line)
            except ValueError:  # a truncated last line, bad UTF-8, half a record
                corrupt += 1
                continue
            if _valid(record):
                rows.append({**record["features"], **{k: record[k] for k in _META}})
            else:
                corrupt += 1
    return pd.DataFrame(rows), corrupt


def _arrow_to_pandas(table: Any) -> pd.DataFrame:
    features = table.column("features").combine_chunks()
    frame = pd.DataFrame(
        {
            f.name: features.field(i).to_numpy(zero_copy_only=False)
            for i, f in enumerate(features.type)
        }
    )
    for key in _META:
        frame[key] = table.column(key).to_numpy(zero_copy_only=False)
    return frame


def _in_window(table: Any, model: str, version: str | None, lo: str, hi: str) -> Any:
    """Arrow mask: rows of `model` (and `version`) with lo <= timestamp < hi, as text."""
    import pyarrow as pa
    import pyarrow.compute as pc

    mask = pc.and_(
        pc.equal(table.column("model_name"), model),
        pc.and_(
            pc.greater_equal(table.column("timestamp"), lo),
            pc.less(table.column("timestamp"), hi),
        ),
    )
    if version is not None:
        versions = pc.cast(table.column("model_version"), pa.string())
        mask = pc.and_(mask, pc.equal(versions, version))
    return mask


def _stream_file(
    path: Path, model: str, version: str | None, lo: str, hi: str, sample: _Sample
) -> int:
    """Arrow's streaming JSON reader (C++), filtering and sampling batch by batch.

    Timestamps are compared as strings: the service writes them in one fixed UTC format.
    Returns the corrupt-line count (0); raises _Fallback if any line does not parse.
    """
    import pyarrow as pa
    import pyarrow.json as pj

    strings = pa.schema([(k, pa.string()) for k in ("request_id", "timestamp", "model_name")])
    try:
        reader = pj.open_json(
            path,
            read_options=pj.ReadOptions(block_size=BLOCK_BYTES),
            parse_options=pj.ParseOptions(explicit_schema=strings),
        )
        for batch in reader:
            table = pa.Table.from_batches([batch])
            names = set(table.column_names)
            if not set(_META) <= names or not pa.types.is_struct(
                table.schema.field("features").type
            ):
                raise _Fallback
            if table.column("score").null_count or table.column("request_id").null_count:
                raise _Fallback
            sample.add(table.filter(_in_window(table, model, version, lo, hi)), _arrow_to_pandas)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, UnicodeDecodeError):
        raise _Fallback from None
    return 0


# A batch scoring run's columns that are neither the log's nor features (`scoring.rows`).
_BATCH_ONLY = ("model_uri", "input_hash", "date")


def _read_batch(
    path: Path, model: str, version: str | None, lo: str, hi: str, sample: _Sample
) -> None:
    """One part of a `shipyard score` output: the log's fields at the top level, features
    beside them; filtered the same way, by the scored rows' own times."""
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    table = table.drop_columns([c for c in _BATCH_ONLY if c in table.column_names])
    sample.add(table.filter(_in_window(table, model, version, lo, hi)), lambda t: t.to_pandas())


def read_window(
    folder: Path,
    model: str,
    start: datetime,
    end: datetime,
    version: str | None = None,
    *,
    sample_rows: int | None = None,
    seed: int = 0,
) -> LogWindow:
    """Records of `model` (and `version`, if given) logged in [start, end), from the API's
    prediction log files, or from a batch scoring output (by the scored rows' times).

    With `sample_rows`, a larger window comes back as a seeded uniform sample of that size;
    `rows` still counts every record in the window.
    """
    sample = _Sample(sample_rows, seed)
    corrupt = files = 0
    lo = start.astimezone(UTC).isoformat(timespec="milliseconds")
    hi = end.astimezone(UTC).isoformat(timespec="milliseconds")
    for path in sorted(folder.glob("*.jsonl")) if folder.is_dir() else []:
        if path.stat().st_mtime < start.timestamp():
            continue  # every record in it was written before the window
        files += 1
        mark = sample.mark()
        try:
            corrupt += _stream_file(path, model, version, lo, hi, sample)
            continue
        except _Fallback:
            sample.restore(mark)
        part, bad = _read_slow(path)
        corrupt += bad
        if part.empty:
            continue
        keep = part["model_name"] == model
        if version is not None:
            keep &= part["model_version"].astype(str) == version
        stamps = pd.to_datetime(part["timestamp"], utc=True, format="ISO8601")
        keep &= (stamps >= start) & (stamps < end)
        sample.add(part[keep].reset_index(drop=True), lambda f: f)
    batch = folder / "_manifest.json"  # a `shipyard score` output folder
    for path in sorted(folder.glob("date=*/*.parquet")) if batch.exists() else []:
        files += 1
        _read_batch(path, model, version, lo, hi, sample)
    frame = sample.result().reset_index(drop=True)
    features = [c for c in frame.columns if c not in _META]
    return LogWindow(frame, sample.seen, corrupt, files, features)


def parse_window(text: str, now: datetime | None = None) -> tuple[datetime, datetime]:
    """`6h` (the last six hours) or `START/END` in ISO 8601; naive times are UTC."""
    from shipyard.monitoring.policy import parse_duration

    now = now or datetime.now(UTC)
    if "/" in text:
        first, _, last = text.partition("/")
        try:
            start, end = (_utc(datetime.fromisoformat(t)) for t in (first, last))
        except ValueError:
            raise ValueError(f"window '{text}': expected START/END in ISO 8601") from None
        if end <= start:
            raise ValueError(f"window '{text}': END must be after START")
        return start, end
    return now - parse_duration(text), now


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def window_label(start: datetime, end: datetime) -> str:
    """A file-name-safe name for a window."""
    return f"{start:%Y%m%dT%H%M%S}-{end:%Y%m%dT%H%M%S}"


def logged_request_ids(folder: Path) -> set[str]:
    """Every request id in the log, to tell labels for served requests from strays."""
    import pyarrow as pa
    import pyarrow.json as pj

    ids: set[str] = set()
    for path in sorted(folder.glob("*.jsonl")) if folder.is_dir() else []:
        try:
            table = pj.read_json(path)
            ids.update(str(i) for i in table.column("request_id").to_pylist() if i is not None)
        except (pa.ArrowInvalid, pa.ArrowTypeError, KeyError):
            frame, _ = _read_slow(path)
            if not frame.empty:
                ids.update(frame["request_id"].astype(str))
    return ids
