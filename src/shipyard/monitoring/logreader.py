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

import pandas as pd

_META = ("request_id", "timestamp", "model_name", "model_version", "score", "decision")


@dataclass(frozen=True)
class LogWindow:
    frame: pd.DataFrame  # request_id, timestamp, model_version, score, decision, features...
    corrupt: int  # lines that were not a whole, valid record
    files: int  # files read
    features: list[str]  # feature names the records carry (union)


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


def _read_file(path: Path) -> tuple[pd.DataFrame, int]:
    """Arrow's JSON reader (C++, threaded) when every line parses; else line by line."""
    import pyarrow as pa
    import pyarrow.json as pj

    try:
        table = pj.read_json(path)
    except (pa.ArrowInvalid, pa.ArrowTypeError, UnicodeDecodeError):
        return _read_slow(path)
    names = set(table.column_names)
    if not set(_META) <= names or "features" not in names:
        return _read_slow(path)
    if not pa.types.is_struct(table.schema.field("features").type):
        return _read_slow(path)
    features = table.column("features").combine_chunks()
    frame = pd.DataFrame(
        {
            f.name: features.field(i).to_numpy(zero_copy_only=False)
            for i, f in enumerate(features.type)
        }
    )
    for key in _META:
        frame[key] = table.column(key).to_numpy(zero_copy_only=False)
    bad = frame["score"].isna() | frame["request_id"].isna()
    return frame[~bad].reset_index(drop=True), int(bad.sum())


def read_window(
    folder: Path, model: str, start: datetime, end: datetime, version: str | None = None
) -> LogWindow:
    """Records of `model` (and `version`, if given) logged in [start, end)."""
    parts: list[pd.DataFrame] = []
    corrupt = files = 0
    since = start.timestamp()
    for path in sorted(folder.glob("*.jsonl")) if folder.is_dir() else []:
        if path.stat().st_mtime < since:
            continue  # every record in it was written before the window
        part, bad = _read_file(path)
        files += 1
        corrupt += bad
        if part.empty:
            continue
        keep = part["model_name"] == model
        if version is not None:
            keep &= part["model_version"].astype(str) == version
        stamps = pd.to_datetime(part["timestamp"], utc=True, format="ISO8601")
        keep &= (stamps >= start) & (stamps < end)
        parts.append(part[keep])
    frame = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    features = [c for c in frame.columns if c not in _META]
    return LogWindow(frame, corrupt, files, features)


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
    ids: set[str] = set()
    for path in sorted(folder.glob("*.jsonl")) if folder.is_dir() else []:
        frame, _ = _read_file(path)
        if not frame.empty:
            ids.update(frame["request_id"].astype(str))
    return ids
