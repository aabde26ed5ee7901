"""Batch input parsed in Arrow judges every value as the contract's pandas path does: the
fast path may only be faster, never laxer."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
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


def test_a_quoted_line_break_is_one_value_wherever_the_read_block_ends(
    raw_params: dict[str, Any], tmp_path: Path
) -> None:
    """RFC 4180, as pandas and the Spark engine read it: a quoted value may hold a line break
    and a doubled quote. Arrow's reader, left to its default, read such a value inside a block
    but failed with "Expected 7 columns, got 1" where its 1 MiB block ended inside one."""
    data = parse_params(raw_params).data

    def row(i: int, note: str) -> str:
        return f"{i},2025-04-01 10:00:00,7,3,12.5,0,{note}\n"

    text = f"{HEADER},note\n"
    while len(text) < (1 << 20) - 200:
        text += row(len(text), "x")  # ids: any distinct numbers
    # A filler row long enough that the next one starts 10 bytes before the block's end:
    # the reader completes a block's last row up to the next line break, inside the value.
    at = (1 << 20) - 10
    text += row(len(text), "x" * (at - len(text) - len(row(len(text), ""))))
    assert len(text) == at
    quoted = '"line one\nline ""two"""'
    text += row(at, quoted)
    assert at < (1 << 20) < text.index("\nline ", at)
    while len(text) < (1 << 20) + 200_000:
        text += row(len(text), "x")
    path = tmp_path / "in.csv"
    path.write_text(text)
    read = [table for _, _, table in embedded.chunks([path], 100_000, data)]
    got = pd.concat([t.to_pandas() for t in read], ignore_index=True)
    expected = pd.read_csv(path, dtype=str)
    pd.testing.assert_series_equal(got["note"], expected["note"])
    assert got.loc[got["transaction_id"] == str(at), "note"].tolist() == ['line one\nline "two"']


class Sums:
    """A model whose score is a fixed function of its fields."""

    def predict_proba(self, frame: pd.DataFrame) -> Any:
        p = 1 / (1 + np.exp(-frame.to_numpy(dtype="float64").sum(axis=1) / 100))
        return np.column_stack([1 - p, p])


def test_spark_refusals_carry_the_values_embedded_rejects_write(
    raw_params: dict[str, Any],
) -> None:
    """Rows the API would refuse leave Spark's scoring UDF as `rows.scored`'s rejects (the
    same columns and values embedded writes), with their row number for the input order."""
    from shipyard.history import feature_names, history_features
    from shipyard.scoring import spark
    from shipyard.scoring.model import ScoringModel

    params = parse_params(raw_params)
    data, cfg = params.data, params.featurize
    lines = [*GOOD, "3,2025-04-01 10:20:00,8,4,900.5,", "4,2025-04-01 10:21:00,8,4,2,"]
    text = pd.DataFrame([line.split(",") for line in lines], columns=HEADER.split(","))
    good = rows.check(text.replace("", None), data, "in.csv").good
    model = ScoringModel(
        name="m",
        version="1",
        uri="models:/m/1",
        fields=["tx_amount", *feature_names(cfg)],
        threshold=0.5,
        field_ranges={"tx_amount": (0.0, 100.0)},
        data_hash="md5:x",
    )
    windows = history_features(good, cfg, data.timestamp, data.target)
    entity = [n for n in windows.columns if n not in ("is_weekend", "is_night")]
    numbered = good.assign(**{spark.ROW: [40, 41, 42, 43]})
    out, refused = spark._score_precomputed(Sums(), numbered, windows[entity], model, data, cfg)
    want_out, want = rows.scored(Sums(), good, windows, model, data)
    pd.testing.assert_frame_equal(out, want_out)
    assert list(out["request_id"]) == ["1", "2", "4"]
    assert refused[spark.ROW].tolist() == [42]
    pd.testing.assert_frame_equal(refused.drop(columns=spark.ROW), want)
    assert refused["tx_amount"].tolist() == ["900.5"]
    assert want["source"].tolist() == [rows.RANGE_SOURCE]


def test_spark_side_files_count_a_retried_batch_once_and_write_embeddeds_rejects(
    tmp_path: Path,
) -> None:
    """A task that ran twice (a retry) wrote its batch's side file twice under one name: its
    rows count once. Refusals are written in the input's columns and embedded's types (a
    served-range refusal has no value for an input column the contract does not declare),
    the first in input order is the one `--strict` names, and a part an attempt left half
    written is removed beside the whole ones."""
    import pyarrow as pa

    from shipyard.scoring import batch, spark

    pytest.importorskip("pyspark")  # the side files name their task by Spark's TaskContext
    partial = tmp_path / ".out.partial"
    side = partial / spark.SIDE
    side.mkdir(parents=True)

    def write(kind: str, index: int, refused: pd.DataFrame, rows_in: int | None = None) -> None:
        table = pa.Table.from_pandas(refused, preserve_index=False)
        if rows_in is not None:
            table = table.replace_schema_metadata({spark.ROWS_IN: str(rows_in).encode()})
        spark._side_file(str(side), kind, index, table)

    typed = {"id": "id: type: expected int"}
    late = pd.DataFrame({"id": ["9"], "extra": ["e"], "reason": [typed["id"]], "source": ["f"]})
    write("contract", 0, late.assign(**{spark.ROW: [90]}), rows_in=100)
    write("contract", 0, late.assign(**{spark.ROW: [90]}), rows_in=100)  # the batch, retried
    write("contract", 1, late.iloc[:0].assign(**{spark.ROW: pd.Series([], dtype="int64")}), 50)
    ranged = pd.DataFrame({"id": ["3"], "reason": ["amount: range: x"], "source": ["served"]})
    write("range", 0, ranged.assign(**{spark.ROW: [3]}))
    columns = ["id", "extra", "reason", "source"]
    counts, first = spark._side_rejects(partial, columns)
    assert (counts.rows_in, counts.rows_rejected) == (150, 2)
    assert counts.reasons == {typed["id"]: 1, "amount: range: x": 1}
    assert first is not None and first["id"].tolist() == ["3"] and not side.exists()
    written = pd.read_parquet(partial / batch.REJECTS).sort_values("id", ignore_index=True)
    assert list(written.columns) == columns and written["id"].tolist() == ["3", "9"]
    assert written["extra"].isna().tolist() == [True, False]
    assert all(str(written[c].dtype) == "string" for c in columns[:3])

    day = partial / "date=2025-04-01"
    day.mkdir()
    (day / "part-t00000.parquet").write_bytes(b"whole")
    (day / ".part-t00001.parquet").write_bytes(b"an attempt that died")
    spark._settle(partial)
    assert [p.name for p in day.iterdir()] == ["part-t00000.parquet"]


def test_stacked_frames_are_pandas_concat_whatever_the_column_types() -> None:
    """`rows.stack` is `pd.concat` of the chosen rows: by NumPy where it can, by pandas
    where a column's type is not one NumPy type throughout (zoned times, ints beside
    floats), and the same either way."""
    n = 50
    base = pd.DataFrame(
        {
            "id": np.arange(n),
            "at": pd.date_range("2025-04-01", periods=n, freq="h"),
            "amount": np.linspace(0, 1, n),
            "label": np.where(np.arange(n) % 3 == 0, np.nan, 1.0),
            "name": [f"c{i % 4}" for i in range(n)],
        }
    ).iloc[5:]  # a slice, as the stream's kept rows are after a prune
    zoned = base.assign(at=base["at"].dt.tz_localize("UTC"))
    ints = base.assign(amount=np.arange(len(base)))
    columns = ["at", "id", "amount", "label", "name"]
    for other in (base, zoned, ints):
        frames = [base, other, base.iloc[::2]]
        keep = [np.array([0, 3, 4, 20]), np.array([], dtype=int), np.arange(len(frames[2]))[1::3]]
        chosen = [f[columns].iloc[k] for f, k in zip(frames, keep, strict=True)]
        want = pd.concat(chosen, ignore_index=True)
        pd.testing.assert_frame_equal(rows.stack(frames, columns, keep), want)
        whole = pd.concat([f[columns] for f in frames], ignore_index=True)
        pd.testing.assert_frame_equal(rows.stack(frames, columns), whole)


def test_fields_are_the_models_columns_in_its_order_numbers_as_one_block(
    raw_params: dict[str, Any],
) -> None:
    from shipyard.history import history_features
    from shipyard.scoring.model import ScoringModel

    params = parse_params(raw_params)
    data, cfg = params.data, params.featurize
    text = pd.DataFrame([line.split(",") for line in GOOD], columns=HEADER.split(","))
    good = rows.check(text, data, "in.csv").good
    windows = history_features(good, cfg, data.timestamp, data.target)
    names = ["terminal_id_risk_7d", "tx_amount", "is_night", "customer_id_nb_tx_1d"]
    model = ScoringModel(
        name="m",
        version="1",
        uri="models:/m/1",
        fields=names,
        threshold=0.5,
        field_ranges={},
        data_hash="md5:x",
    )
    got = rows.fields(good, windows, model, data)
    assert list(got.columns) == names and (got.dtypes == "float64").all()
    assert got["tx_amount"].tolist() == [12.5, 80.0]
    for name in names[::2] + names[3:]:
        assert got[name].tolist() == windows[name].tolist(), name
    # A categorical field stays text, its missing values named: the frame is not one block.
    typed = good.assign(customer_id=pd.Series(["a", None], dtype=object))
    data = data.model_copy(
        update={"features": data.features.model_copy(update={"categorical": ["customer_id"]})}
    )
    model = dataclasses.replace(model, fields=["tx_amount", "customer_id", "is_night"])
    got = rows.fields(typed, windows, model, data)
    assert got["customer_id"].tolist() == ["a", "__missing__"]
    assert got["tx_amount"].dtype == "float64" and got["is_night"].tolist() == [0.0, 0.0]


def test_day_parts_skip_an_empty_slice_and_write_the_rest(tmp_path: Path) -> None:
    """A chunk's (or a Spark task's) first slice can be all history before `--since`: its
    empty frame, whose text columns have no type yet, must not fix the part's schema."""
    from shipyard.scoring import batch

    def rows(ids: list[str], day: str) -> pd.DataFrame:
        return pd.DataFrame(
            {
                "request_id": pd.array(ids, dtype="string"),
                "model_name": pd.Series(["m"] * len(ids), dtype=object),
                "score": np.linspace(0, 1, len(ids)),
                "date": [day] * len(ids),
            }
        )

    with batch.DayParts(tmp_path, "part-00000.parquet") as parts:
        parts.write(rows([], "2025-04-01"))
        parts.write(rows(["1", "2"], "2025-04-02"))
        parts.write(rows(["3"], "2025-04-03"))
    got = pd.read_parquet(tmp_path)
    assert got["request_id"].tolist() == ["1", "2", "3"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["date=2025-04-02", "date=2025-04-03"]


def test_a_rows_hash_does_not_depend_on_the_order_params_list_the_columns(
    raw_params: dict[str, Any],
) -> None:
    """`params.yaml` written by a YAML dump lists the columns sorted; by hand, in any order:
    the same row must hash alike, as both engines and every rerun must."""
    data = parse_params(raw_params).data
    text = pd.DataFrame([line.split(",") for line in GOOD], columns=HEADER.split(","))
    good = rows.check(text, data, "in.csv").good
    columns = raw_params["data"]["columns"]
    turned = {
        **raw_params,
        "data": {**raw_params["data"], "columns": dict(reversed(columns.items()))},
    }
    reordered = parse_params(turned).data
    assert list(reordered.columns) != list(data.columns)
    np.testing.assert_array_equal(rows.row_hash(good, data), rows.row_hash(good, reordered))
    other = good.assign(tx_amount=good["tx_amount"] + 1)
    assert (rows.row_hash(other, data) != rows.row_hash(good, data)).all()
