"""Every library that `src/` imports is declared in pyproject.toml (as a dependency, or in an
extra), not merely in the lock."""

from __future__ import annotations

import re
import tomllib

from shipyard.sources import canonical, imported_distributions
from tests.conftest import REPO


def test_every_imported_distribution_is_declared() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extras = [d for group in project.get("optional-dependencies", {}).values() for d in group]
    declared = {
        canonical(re.split(r"[<>=!~ \[;]", d, maxsplit=1)[0])
        for d in [*project["dependencies"], *extras]
    }
    used = imported_distributions(sorted((REPO / "src" / "shipyard").rglob("*.py")))
    # mlflow's modules are shared by three distributions; declaring mlflow covers them
    missing = sorted(used - declared - {"mlflow-skinny", "mlflow-tracing"})
    assert missing == [], f"imported by src/ but not in pyproject.toml dependencies: {missing}"
