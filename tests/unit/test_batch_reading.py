"""Batch input parsed in Arrow judges every value as the contract's pandas path does: the
fast path may only be faster, never laxer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from shipyard.config import parse_params
from shipyard.scoring import embedded, rows

HEADER = "transaction_id,tx_datetime,customer_id,terminal_id,tx_amount,tx_fraud"
GOOD = ["1,2025-04-01 10:00:00,7,3,12.5,0", "2,2025-04-01T10:05:00,7,3,80,1"]
# (row, rows the contract rejects): each value both paths must judge alike.
CASES = {
    "hex id": ("3,2025-04-01 10:06:00,0x10,3,1.0,0", 1),
    "overflowing amount": ("4,2025-04-01 10:07:00,7,3,1e400,0", 1),
    "nan amount": ("5,2025-04-01 10:08:00,7,3,nan,0", 1),
    "NA terminal": ("12,2025-04-01 10:15:00,7,NA,1.0,0", 1),  # a value, not a gap
    "fractional id": ("7,2025-04-01 10:10:00,7.5,3,1.0,0", 1),
    "negative amount": ("9,2025-04-01 10:12:00,7,3,-1,0", 1),
    "empty terminal": ("10,2025-04-01 10:13:00,7,,1.0,0", 1),
    "bad label": ("11,2025-04-01 10:14:00,7,3,1.0,2", 1),
    "padded id": ("6,2025-04-01 10:09:00, 7,3,1.0,0", 0),  # pandas strips it
    "zoned time": ("8,2025-04-01T10:11:00+02:00,7,3,1.0,0", 0),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_arrow_typed_chunks_judge_rows_as_text_does(
    case: str, raw_params: dict[str, Any], tmp_path: Path
) -> None:
    data = parse_params(raw_params).data
    path = tmp_path / "in.csv"
    row, rejected = CASES[case]
    path.write_text("\n".join([HEADER, *GOOD, row]) + "\n")
    [(_, fast, read)] = list(embedded.chunks([path], 1000, data))
    text = pd.read_csv(path, dtype=str, keep_default_na=False).replace("", None)
    a = embedded._as_read(rows.check(fast, data, str(path)), read)
    b = rows.check(text, data, str(path))
    assert list(a.rejects["reason"]) == list(b.rejects["reason"])
    pd.testing.assert_frame_equal(a.rejects, b.rejects)  # the values as the file gives them
    assert len(a.rejects) == rejected, case
    pd.testing.assert_frame_equal(a.good, b.good, check_dtype=False)
