"""The prediction-log reader and the labels store, on files written here."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest

from shipyard.config import load_params
from shipyard.errors import ValidationFailed
from shipyard.monitoring import labels
from shipyard.monitoring.logreader import logged_request_ids, parse_window, read_window
from tests.conftest import REPO

T0 = datetime(2026, 11, 1, 12, tzinfo=UTC)


def record(i: int, version: str = "3", minutes: int = 0) -> dict[str, object]:
    return {
        "request_id": f"r{i}",
        "timestamp": (T0 + timedelta(minutes=minutes)).isoformat(timespec="milliseconds"),
        "model_name": "fraud-detector",
        "model_version": version,
        "features": {"tx_amount": float(i), "terminal": "t1"},
        "score": 0.5,
        "decision": False,
    }


def write(path: Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines))


def test_window_version_and_time_filter(tmp_path: Path) -> None:
    lines = [json.dumps(record(i, minutes=i)) for i in range(10)]
    lines += [json.dumps(record(99, version="2", minutes=1))]
    write(tmp_path / "predictions-a.jsonl", lines)
    got = read_window(tmp_path, "fraud-detector", T0, T0 + timedelta(minutes=5), "3")
    assert list(got.frame["request_id"]) == [f"r{i}" for i in range(5)]
    assert got.corrupt == 0 and sorted(got.features) == ["terminal", "tx_amount"]


def test_corrupt_and_truncated_lines_are_counted_and_skipped(tmp_path: Path) -> None:
    good = [json.dumps(record(i)) for i in range(3)]
    write(tmp_path / "predictions-a.jsonl", [*good, "not json", '{"request_id": "x"}'])
    (tmp_path / "predictions-a.jsonl").open("a").write(json.dumps(record(7))[:40])  # killed
    got = read_window(tmp_path, "fraud-detector", T0, T0 + timedelta(hours=1))
    assert len(got.frame) == 3 and got.corrupt == 3


def test_files_older_than_the_window_are_not_opened(tmp_path: Path) -> None:
    path = tmp_path / "predictions-old.jsonl"
    write(path, [json.dumps(record(1))])
    os.utime(path, (T0.timestamp() - 10, T0.timestamp() - 10))
    got = read_window(tmp_path, "fraud-detector", T0, T0 + timedelta(hours=1))
    assert got.files == 0 and got.frame.empty


def test_window_syntax() -> None:
    start, end = parse_window("6h", now=T0)
    assert end - start == timedelta(hours=6)
    start, end = parse_window("2026-11-01T10:00/2026-11-01T11:00")
    assert start.tzinfo is not None and end - start == timedelta(hours=1)
    with pytest.raises(ValueError, match="END must be after START"):
        parse_window("2026-11-01T11:00/2026-11-01T10:00")
    with pytest.raises(ValueError, match="duration"):
        parse_window("yesterday")


def test_labels_keep_unknown_ids_and_name_a_missing_column(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SHIPYARD_RUNTIME_DIR", str(tmp_path / "runtime"))
    data = load_params(REPO / "params.yaml").data
    write(tmp_path / "log" / "predictions-a.jsonl", [json.dumps(record(i)) for i in range(3)])
    ids = logged_request_ids(tmp_path / "log")
    frame = pd.DataFrame({data.id: ["r0", "r1", "zz"], data.target: ["1", "0", "0"]})
    frame.to_csv(tmp_path / "labels.csv", index=False)
    result = labels.ingest(tmp_path / "labels.csv", "fraud-detector", data, ids)
    assert (result["rows"], result["matched"], result["unknown_request_ids"]) == (3, 2, 1)
    stored = labels.load_labels("fraud-detector")
    assert dict(zip(stored["request_id"], stored["label"], strict=True)) == {
        "r0": 1,
        "r1": 0,
        "zz": 0,
    }
    frame.drop(columns=data.target).to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(ValidationFailed, match=f"column '{data.target}': rule 'required'"):
        labels.ingest(tmp_path / "bad.csv", "fraud-detector", data, ids)
    frame.assign(**{data.target: ["1", "yes", "0"]}).to_csv(tmp_path / "odd.csv", index=False)
    with pytest.raises(ValidationFailed, match="rule 'label'"):
        labels.ingest(tmp_path / "odd.csv", "fraud-detector", data, ids)


def test_a_large_window_comes_back_as_a_seeded_uniform_sample(tmp_path: Path) -> None:
    for f in range(3):  # several files: later ones are cut down before they become pandas
        lines = [json.dumps(record(f * 400 + i, minutes=f * 400 + i)) for i in range(400)]
        write(tmp_path / f"predictions-{f}.jsonl", lines)
    write(tmp_path / "predictions-9.jsonl", [json.dumps(record(5000, minutes=5)), "{broken"])
    end = T0 + timedelta(days=2)
    got = read_window(tmp_path, "fraud-detector", T0, end, sample_rows=100, seed=1)
    again = read_window(tmp_path, "fraud-detector", T0, end, sample_rows=100, seed=1)
    assert got.rows == 1201 and len(got.frame) == 100 and got.corrupt == 1
    assert list(got.frame["request_id"]) == list(again.frame["request_id"])
    ids = got.frame["request_id"].str[1:].astype(int)
    assert ids.min() < 200 and ids.max() > 1000 and ids.is_unique  # spread over all files
    assert got.frame["timestamp"].is_monotonic_increasing
