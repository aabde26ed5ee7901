"""Every library that `src/` imports is declared in pyproject.toml, not merely in the lock."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions

from tests.conftest import REPO


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_every_imported_distribution_is_declared() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    declared = {
        _canonical(re.split(r"[<>=!~ \[;]", d, maxsplit=1)[0]) for d in project["dependencies"]
    }
    tops: set[str] = set()
    for path in (REPO / "src" / "shipyard").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                tops.update(a.name.split(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                tops.add(node.module.split(".")[0])
    owners = packages_distributions()
    missing = {}
    for top in sorted(tops - set(sys.stdlib_module_names) - {"shipyard"}):
        dists = {_canonical(d) for d in owners.get(top, [top])}
        if not dists & declared:
            missing[top] = sorted(dists)
    assert missing == {}, f"imported by src/ but not in pyproject.toml dependencies: {missing}"
