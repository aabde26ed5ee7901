"""The payment flow's side of `shipyard stream`: transactions published as events, one JSON
object of the contract's columns per stream entry, as `events.parse` reads them.

`shipyard data publish` is this module's entry: it puts a day of transactions on the stream
that a consumer scores, as `shipyard data replay` sends one to the API.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
import pandas as pd

from shipyard.config import DataSection
from shipyard.errors import ShipyardError
from shipyard.scoring.ledger import DATA_KEY

PIPELINE = 1000  # entries per round trip to the broker
PROGRESS_SECONDS = 2.0


@dataclass(frozen=True)
class Published:
    sent: int
    seconds: float


def bodies(frame: pd.DataFrame, data: DataSection, labels: bool) -> list[bytes]:
    """One event per row, in time order: the contract's columns in JSON's own types (numbers
    as numbers, times as ISO 8601 text with their zone, a missing value as null); the label
    only with `labels` (history whose labels are known), as a payment flow has none."""
    names = [n for n in data.columns if n in frame.columns and (labels or n != data.target)]
    rows = frame.sort_values(data.timestamp, kind="stable")
    columns = [_json_values(rows[name], data.columns[name].type) for name in names]
    return [orjson.dumps(dict(zip(names, row, strict=True))) for row in zip(*columns, strict=True)]


def _as_json(kind: str) -> Callable[[Any], Any]:
    if kind == "datetime":
        return lambda value: value.isoformat()
    return {"int": int, "float": float, "bool": bool}.get(kind, str)


def _json_values(column: pd.Series, kind: str) -> list[Any]:
    convert = _as_json(kind)
    return [None if pd.isna(v) else convert(v) for v in column.tolist()]


def publish(
    client: Any,
    stream: str,
    events: list[bytes],
    rate: float | None = None,
    report: Callable[[str], None] | None = None,
) -> Published:
    """XADD each event to `stream` in order, in pipelines of PIPELINE entries; at `rate`
    events per second when given, else as fast as the broker takes them. `report` gets a
    line every PROGRESS_SECONDS. A broker lost midway is one error saying how many went."""
    from shipyard.scoring.stream import is_connection_error

    began = last = time.monotonic()
    sent = 0
    while sent < len(events):
        due = len(events) if rate is None else int((time.monotonic() - began) * rate) + 1
        upto = min(len(events), due, sent + PIPELINE)
        if upto == sent:
            time.sleep(0.005)
            continue
        pipe = client.pipeline(transaction=False)
        for body in events[sent:upto]:
            pipe.xadd(stream, {DATA_KEY: body})
        try:
            pipe.execute()
        except Exception as err:
            if not is_connection_error(err):
                raise
            raise ShipyardError(
                f"broker: {err}; {sent} of {len(events)} event(s) published before it (up to "
                f"{upto - sent} more may be); publishing again is safe: a consumer decides an "
                "event id once and dead-letters the repeats"
            ) from err
        sent = upto
        now = time.monotonic()
        if report is not None and now - last >= PROGRESS_SECONDS:
            report(f"{sent}/{len(events)} events, {sent / (now - began):.0f}/s")
            last = now
    return Published(sent, time.monotonic() - began)
