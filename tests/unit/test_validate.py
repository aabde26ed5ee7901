"""Each validation rule, on the file shapes users actually hand us."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from click.testing import CliRunner

from shipyard.config import parse_params
from shipyard.errors import ValidationFailed
from shipyard.pipeline.validate import validate

HEADER = "transaction_id,tx_datetime,customer_id,terminal_id,tx_amount,tx_fraud\n"


def good_rows(n: int = 40, start: int = 0) -> str:
    rows = []
    for i in range(start, start + n):
        fraud = 1 if i % 10 == 0 else 0
        rows.append(f"{i},2025-01-01 00:{i % 60:02d}:00,{i % 7},{i % 5},{10 + i}.50,{fraud}\n")
    return "".join(rows)


@pytest.fixture
def params(raw_params: dict[str, Any], tmp_path: Path) -> Any:
    raw_params["data"]["path"] = str(tmp_path / "data")
    raw_params["validate"].update(min_rows=10, max_positive_rate=0.5)
    (tmp_path / "data").mkdir()
    return parse_params(raw_params)


def write(tmp_path: Path, text: str | bytes, name: str = "a.csv") -> Path:
    path = tmp_path / "data" / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return path


def failure(params: Any) -> ValidationFailed:
    with pytest.raises(ValidationFailed) as info:
        validate(params)
    return info.value


def test_good_files_pass_and_are_typed_and_time_ordered(params: Any, tmp_path: Path) -> None:
    write(tmp_path, HEADER + good_rows(20, 20), "b.csv")
    write(tmp_path, HEADER + good_rows(20, 0), "a.csv")
    frame, report = validate(params)
    assert report["rows"] == 40 and report["passed"]
    assert [f["path"].rsplit("/", 1)[1] for f in report["files"]] == ["a.csv", "b.csv"]
    assert pd.api.types.is_datetime64_any_dtype(frame["tx_datetime"])
    assert frame["tx_datetime"].is_monotonic_increasing
    assert frame["tx_fraud"].dtype == "int64"
    # The default contract declares no categories: the report must not claim that rule.
    assert "categories" not in report["rules"] and "range" in report["rules"]


def test_the_report_lists_the_rules_the_config_applies(raw_params: dict[str, Any]) -> None:
    from shipyard.pipeline.validate import rules_checked

    raw_params["validate"]["allow_duplicate_ids"] = True
    raw_params["data"]["columns"]["terminal_id"] = {"type": "string", "categories": ["a", "b"]}
    p = parse_params(raw_params)
    rules = rules_checked(p.data, p.validate_)
    assert "categories" in rules and "duplicates" not in rules


def test_missing_column(params: Any, tmp_path: Path) -> None:
    text = (HEADER + good_rows()).replace(",tx_amount", ",amount")
    path = write(tmp_path, text)
    err = failure(params)
    assert (err.source, err.column, err.rule) == (str(path), "tx_amount", "columns")


def test_wrong_type_names_row_and_value(params: Any, tmp_path: Path) -> None:
    write(
        tmp_path, HEADER + good_rows(5) + "99,2025-01-02 00:00:00,1,1,lots,0\n" + good_rows(20, 5)
    )
    err = failure(params)
    assert (err.column, err.rule) == ("tx_amount", "type")
    assert "row 6" in str(err) and "'lots'" in str(err)


def test_non_integer_id_is_a_type_error(params: Any, tmp_path: Path) -> None:
    write(tmp_path, HEADER + "1.5,2025-01-02 00:00:00,1,1,3.0,0\n" + good_rows(20, 5))
    assert (failure(params).column, failure(params).rule) == ("transaction_id", "type")


def test_infinite_amount_is_a_type_error(params: Any, tmp_path: Path) -> None:
    write(tmp_path, HEADER + "1,2025-01-02 00:00:00,1,1,inf,0\n" + good_rows(20, 5))
    assert failure(params).rule == "type"


def test_nan_label(params: Any, tmp_path: Path) -> None:
    write(tmp_path, HEADER + good_rows(20) + "99,2025-01-02 00:00:00,1,1,3.0,\n")
    err = failure(params)
    assert (err.column, err.rule) == ("tx_fraud", "label")


def test_unknown_label_value(params: Any, tmp_path: Path) -> None:
    write(tmp_path, HEADER + good_rows(20) + "99,2025-01-02 00:00:00,1,1,3.0,2\n")
    err = failure(params)
    assert (err.column, err.rule) == ("tx_fraud", "label")


def test_null_feature(params: Any, tmp_path: Path) -> None:
    write(tmp_path, HEADER + good_rows(20) + "99,2025-01-02 00:00:00,,1,3.0,0\n")
    err = failure(params)
    assert (err.column, err.rule) == ("customer_id", "nulls")


def test_out_of_range(params: Any, tmp_path: Path) -> None:
    write(tmp_path, HEADER + good_rows(20) + "99,2025-01-02 00:00:00,1,1,-3.0,0\n")
    err = failure(params)
    assert (err.column, err.rule) == ("tx_amount", "range")


def test_bad_timestamp(params: Any, tmp_path: Path) -> None:
    write(tmp_path, HEADER + good_rows(20) + "99,yesterday,1,1,3.0,0\n")
    err = failure(params)
    assert (err.column, err.rule) == ("tx_datetime", "type")


def test_empty_file(params: Any, tmp_path: Path) -> None:
    path = write(tmp_path, "")
    err = failure(params)
    assert (err.source, err.rule) == (str(path), "min_rows")


def test_header_only_file(params: Any, tmp_path: Path) -> None:
    write(tmp_path, HEADER)
    assert failure(params).rule == "min_rows"


def test_not_csv(params: Any, tmp_path: Path) -> None:
    path = write(tmp_path, b"PAR1\x00\x01\x02binary\xff\xfe")
    err = failure(params)
    assert (err.source, err.rule) == (str(path), "format")


def test_duplicate_ids_across_files(params: Any, tmp_path: Path) -> None:
    write(tmp_path, HEADER + good_rows(20), "a.csv")
    write(tmp_path, HEADER + good_rows(20), "b.csv")
    err = failure(params)
    assert (err.column, err.rule) == ("transaction_id", "duplicates")


def test_too_few_rows(params: Any, tmp_path: Path) -> None:
    write(tmp_path, HEADER + good_rows(5))
    assert failure(params).rule == "min_rows"


def test_class_balance(params: Any, tmp_path: Path) -> None:
    write(tmp_path, HEADER + good_rows(40).replace(",1\n", ",0\n"))
    err = failure(params)
    assert (err.column, err.rule) == ("tx_fraud", "class_balance")


def test_no_files(params: Any) -> None:
    assert failure(params).rule == "format"


def test_stage_failure_is_one_line_and_leaves_no_output(
    params: Any, raw_params: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import yaml

    from shipyard.cli import main

    raw_params["data"]["path"] = "data"
    raw_params["validate"].update(min_rows=10, max_positive_rate=0.5)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw_params))
    write(tmp_path, HEADER + good_rows(20) + "99,2025-01-02 00:00:00,1,1,3.0,\n")
    (tmp_path / "artifacts" / "validated").mkdir(parents=True)  # stale output from a past run
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["stage", "validate"])
    assert result.exit_code == 1
    last = result.output.strip().splitlines()[-1]
    assert last == (
        "error: data/a.csv: column 'tx_fraud': rule 'label': missing label at row 21 (value nan)"
    )
    assert not (tmp_path / "artifacts" / "validated").exists()
