"""Help everywhere, and fast: no heavy library is imported to print it."""

from __future__ import annotations

import json
import subprocess
import sys

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
