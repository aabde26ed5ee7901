"""Serving building blocks without a server: request schema and the prediction log."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
from pydantic import TypeAdapter, ValidationError

from shipyard.serving.predlog import PredictionLog, read_log
from shipyard.serving.schema import batch_type, record_model
from shipyard.serving.spec import ServingSpec

SPEC = ServingSpec(
    model_name="m",
    model_version="1",
    bento_model="m:v1",
    fields={"amount": "double", "n": "long", "channel": "string"},
    field_ranges={"amount": (0.0, 1e6), "n": (-5.0, 5.0)},
    threshold=0.5,
    max_batch=3,
    score_buckets=(0.1, 0.5, 1.0),
)
Record = record_model(SPEC)
GOOD = {"amount": 3, "n": 2, "channel": "web"}


def errors(payload: object) -> list[tuple[object, ...]]:
    with pytest.raises(ValidationError) as info:
        Record.model_validate(payload)
    return [e["loc"] for e in info.value.errors()]


def test_record_accepts_numbers_and_rejects_everything_else() -> None:
    assert Record.model_validate(GOOD).model_dump()["amount"] == 3.0
    assert errors({**GOOD, "amount": "3"}) == [("amount",)]
    assert errors({**GOOD, "amount": float("nan")}) == [("amount",)]
    assert errors({**GOOD, "amount": float("inf")}) == [("amount",)]
    assert errors({**GOOD, "n": 2.5}) == [("n",)]
    assert errors({"amount": 1.0, "n": 1}) == [("channel",)]
    assert errors({**GOOD, "amount": 1e308}) == [("amount",)]  # finite, past the range
    assert errors({**GOOD, "amount": -0.5}) == [("amount",)]
    assert errors({**GOOD, "n": 10**30}) == [("n",)]
    assert errors({**GOOD, "channel": "x" * 257}) == [("channel",)]
    assert Record.model_validate({**GOOD, "amount": 1e6, "n": -5}).model_dump()["n"] == -5


def test_a_spec_without_a_range_for_a_number_is_refused_at_load() -> None:
    raw = SPEC.model_dump()
    for broken, path in (
        ({"amount": (0.0, 1.0)}, "field_ranges.n"),
        ({**raw["field_ranges"], "n": (1.0, float("inf"))}, "field_ranges.n"),
        ({**raw["field_ranges"], "n": (2.0, 1.0)}, "field_ranges.n"),
    ):
        with pytest.raises(ValidationError, match=path):
            ServingSpec.model_validate({**raw, "field_ranges": broken})
    assert errors({**GOOD, "extra": 1}) == [("extra",)]


def test_batch_bounds() -> None:
    adapter = TypeAdapter(batch_type(SPEC, Record))
    assert len(adapter.validate_python([GOOD, GOOD])) == 2
    with pytest.raises(ValidationError, match="at least 1"):
        adapter.validate_python([])
    with pytest.raises(ValidationError, match="at most 3"):
        adapter.validate_python([GOOD] * 4)


def _logged(log: PredictionLog, want: int) -> list[str]:
    """Request ids on disk once `want` lines are there (the writer thread flushes)."""
    deadline = time.monotonic() + 5
    while True:
        ids = [json.loads(x)["request_id"] for x in log.path.read_text().splitlines()]
        if len(ids) >= want or time.monotonic() > deadline:
            return ids
        time.sleep(0.01)


def test_prediction_log_batches_and_survives_a_torn_line(tmp_path: Path) -> None:
    log = PredictionLog(tmp_path, batch=3, interval=60)
    for i in range(3):
        log.append({"request_id": str(i)})
    assert _logged(log, 3) == ["0", "1", "2"]  # a batch is due: the writer flushes it
    log.append({"request_id": "3"})
    time.sleep(0.2)  # the fourth waits for the next batch, the timer or the close
    assert _logged(log, 3) == ["0", "1", "2"]
    log.close()
    with log.path.open("a") as f:
        f.write('{"request_id": "torn')  # what a kill in the middle of a write can leave
    records, bad = read_log(tmp_path)
    assert [r["request_id"] for r in records] == ["0", "1", "2", "3"] and bad == 1


def test_prediction_log_flushes_itself_past_its_backlog(tmp_path: Path) -> None:
    log = PredictionLog(tmp_path, batch=1000, interval=60, backlog=5)
    for i in range(5):
        log.append({"request_id": str(i)})
    # No batch is due and the timer is far: the fifth append wrote all five before returning.
    assert [json.loads(x)["request_id"] for x in log.path.read_text().splitlines()] == [
        str(i) for i in range(5)
    ]
    log.close()


def test_a_prediction_log_without_a_writer_writes_only_when_flushed(tmp_path: Path) -> None:
    """The stream consumer's: no thread writes behind its back, however many are pending."""
    before = threading.active_count()
    log = PredictionLog(tmp_path, batch=2, interval=0.01, writer=False)
    assert threading.active_count() == before
    for i in range(5):
        log.append({"request_id": str(i)})
    time.sleep(0.1)  # a writer would have flushed: the batch is due and the timer past
    assert log.path.read_text() == ""
    log.flush()
    assert [json.loads(x)["request_id"] for x in log.path.read_text().splitlines()] == [
        str(i) for i in range(5)
    ]
    log.append({"request_id": "5"})
    log.close()  # closing flushes the rest
    assert len(log.path.read_text().splitlines()) == 6


def test_prediction_log_refuses_nan(tmp_path: Path) -> None:
    log = PredictionLog(tmp_path, batch=1, interval=60)
    with pytest.raises(ValueError):
        log.append({"score": float("nan")})
    log.close()
