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
