"""The whole loop (`shipyard demo` on the tiny config), run once per registry backend and
shared by the e2e tests: on the embedded sqlite store, and on the team stack. The two runs
are asked for from two modules, so that pytest-xdist can give them to two workers."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO
from tests.integration.workspace import env

TINY = Path(__file__).with_name("tiny.yaml")
_RUNS: dict[str, dict[str, Any]] = {}


def _demo(backend: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    if backend in _RUNS:
        return _RUNS[backend]
    workdir = tmp_path_factory.mktemp(f"demo-{backend}")
    cmd = ["shipyard", "demo", "--workdir", str(workdir), "--config", str(TINY)]
    result = subprocess.run(
        [*cmd, "--backend", backend],
        cwd=REPO,
        env=env(),
        capture_output=True,
        text=True,
        timeout=1500,
        check=False,
    )
    summary = workdir / "summary.json"
    figures = json.loads(summary.read_text()) if summary.exists() else {}
    run = {"result": result, "figures": figures, "repo": workdir / "repo", "workdir": workdir}
    _RUNS[backend] = run
    return run


@pytest.fixture(scope="session")
def demo(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The embedded run; `test_demo_stack.py` overrides it with the run on the team stack."""
    return _demo("sqlite", tmp_path_factory)


@pytest.fixture(scope="session")
def stack_demo(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return _demo("postgres", tmp_path_factory)
