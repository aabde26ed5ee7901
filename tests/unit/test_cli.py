"""Help everywhere, and fast: no heavy library is imported to print it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO

HEAVY = ["mlflow", "evidently", "bentoml", "torch", "sklearn", "pandas", "dvc"]
COMMANDS = [
    [],
    ["stage"],
    ["data"],
    ["data", "bootstrap"],
    ["data", "generate"],
    ["summary"],
    ["promote"],
    ["webhook"],
    ["stack"],
    ["stack", "up"],
    ["stack", "env"],
    ["stack", "check"],
    ["score"],
    ["stack", "down"],
    ["stack", "move"],
    ["deploy"],
    ["deploy", "run"],
    ["deploy", "status"],
    ["webhook", "serve"],
    ["package"],
    ["serve"],
    ["rollback"],
    ["deploy", "start"],
    ["demo"],
]

PROBE = """
import json, sys
from click.testing import CliRunner
from shipyard.cli import main
outs = []
for args in json.loads(sys.argv[1]):
    result = CliRunner().invoke(main, [*args, "--help"])
    outs.append([result.exit_code, result.output])
loaded = [m for m in json.loads(sys.argv[2]) if m in sys.modules]
print(json.dumps({"outs": outs, "loaded": loaded}))
"""


def test_every_help_works_without_heavy_imports() -> None:
    out = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(COMMANDS), json.dumps(HEAVY)],
        capture_output=True,
        text=True,
        check=True,
    )
    report = json.loads(out.stdout)
    assert report["loaded"] == []
    for args, (code, text) in zip(COMMANDS, report["outs"], strict=True):
        assert code == 0, args
        assert "Usage:" in text and len(text.splitlines()) > 3, args


def test_a_tracking_server_away_is_one_line_naming_it(tmp_path: Path) -> None:
    from shipyard.deploy.processes import free_port

    port = free_port()  # nothing listens there
    (tmp_path / "params.yaml").write_text((REPO / "params.yaml").read_text())
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{port}"}
    env["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"  # MLflow's own retries take two minutes
    out = subprocess.run(
        [
            str(Path(sys.executable).with_name("shipyard")),
            "promote",
            "fraud-detector",
            "1",
            "--to",
            "challenger",
            "--policy",
            str(REPO / "registry" / "policy.yaml"),
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 1
    last = out.stderr.strip().splitlines()[-1]
    assert (
        last == f"error: tracking server http://127.0.0.1:{port} unreachable (Connection refused)"
    )
    assert "Traceback" not in out.stderr


def test_tracking_messages() -> None:
    from shipyard.errors import tracking_message

    refused = (
        "API request to https://mlflow.team:5000/api/2.0/mlflow/registered-models/get failed "
        "with error code 403 != 200. Response body: 'forbidden'"
    )
    assert tracking_message(refused) == (
        "tracking server https://mlflow.team:5000: "
        "error code 403 != 200. Response body: 'forbidden'"
    )
    assert tracking_message("RESOURCE_DOES_NOT_EXIST: no such version\nmore") == (
        "MLflow: RESOURCE_DOES_NOT_EXIST: no such version"
    )


def test_tracking_messages_name_what_failed_behind_the_server() -> None:
    from shipyard.errors import tracking_message

    artifacts = (
        "API request to http://127.0.0.1:5000/api/2.0/mlflow-artifacts/artifacts/0/r/a.txt "
        "failed with exception HTTPConnectionPool(host='127.0.0.1', port=5000): Max retries "
        "exceeded with url: /api/2.0/mlflow-artifacts/artifacts/0/r/a.txt (Caused by "
        "ResponseError('too many 500 error responses'))"
    )
    line = tracking_message(artifacts)
    assert line.startswith("tracking server http://127.0.0.1:5000: its artifact store failed")
    assert "unreachable" not in line and "shipyard stack check" in line
    cut = artifacts.replace(
        "ResponseError('too many 500 error responses')",
        "ProtocolError('Connection aborted.', ConnectionResetError(104, 'Connection reset by "
        "peer'))",
    )
    assert tracking_message(cut).startswith(
        "tracking server http://127.0.0.1:5000: its artifact store failed (the server cut"
    )
    older = (
        "API request to endpoint /api/2.0/mlflow/logged-models failed with error code 404 != "
        "200. Response body: '<!doctype html>\n<html lang=en>\n<title>404 Not Found</title>'"
    )
    assert tracking_message(older, "http://team:5000", "3.17.2") == (
        "tracking server http://team:5000 has no endpoint /api/2.0/mlflow/logged-models: "
        "a server older than this client (MLflow 3.17.2); upgrade the server"
    )
    assert tracking_message(older.replace("404", "502"), "http://team:5000") == (
        "tracking server http://team:5000: /api/2.0/mlflow/logged-models answered HTTP 502"
    )
