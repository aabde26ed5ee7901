"""One run of the whole loop (`shipyard demo` on the tiny config), shared by the e2e tests."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO
from tests.integration.workspace import env

TINY = Path(__file__).with_name("tiny.yaml")


@pytest.fixture(scope="session")
def demo(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    workdir = tmp_path_factory.mktemp("demo")
    result = subprocess.run(
        ["shipyard", "demo", "--workdir", str(workdir), "--config", str(TINY)],
        cwd=REPO,
        env=env(),
        capture_output=True,
        text=True,
        timeout=1500,
        check=False,
    )
    summary = workdir / "summary.json"
    figures = json.loads(summary.read_text()) if summary.exists() else {}
    return {"result": result, "figures": figures, "repo": workdir / "repo", "workdir": workdir}
