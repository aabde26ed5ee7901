"""The team stack's server command and its record, without starting anything."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import pytest
from click.testing import CliRunner

from shipyard import stack
from shipyard.cli import main
from shipyard.errors import ShipyardError


def _stack(folder: Path, **changes: object) -> stack.Stack:
    fields = dict(
        folder=str(folder),
        pgdata="",
        postgres_port=5432,
        s3_port=9000,
        s3_pid=0,
        mlflow_port=5000,
        mlflow_pid=0,
        bucket="b",
        access_key="a",
        secret_key="s",
        webhook_key="k",
    )
    return stack.Stack(**{**fields, **changes})  # type: ignore[arg-type]


def _workers(cmd: list[str]) -> str:
    return cmd[cmd.index("--workers") + 1]


def test_the_server_runs_one_worker_unless_asked_for_more(tmp_path: Path) -> None:
    assert _workers(stack._mlflow_cmd(_stack(tmp_path))) == "1"
    assert _workers(stack._mlflow_cmd(_stack(tmp_path, server_workers=3))) == "3"


def test_a_record_written_before_the_worker_count_loads_with_one(tmp_path: Path) -> None:
    """A stack started by an older Shipyard is still found, stopped and restarted."""
    record = asdict(_stack(tmp_path))
    del record["server_workers"]
    (tmp_path / stack.STATE).write_text(json.dumps(record))
    loaded = stack.load(tmp_path)
    assert loaded is not None and loaded.server_workers == 1


def test_no_workers_is_refused_before_anything_starts(tmp_path: Path) -> None:
    folder = tmp_path / "stack"
    with pytest.raises(ShipyardError, match="server_workers must be at least 1, got 0"):
        stack.up(folder, say=lambda _: None, server_workers=0)
    assert not folder.exists()
    result = CliRunner().invoke(
        main, ["stack", "up", "--folder", str(folder), "--server-workers", "0"]
    )
    assert result.exit_code == 2 and "--server-workers" in result.output
    assert not folder.exists()
