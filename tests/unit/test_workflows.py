"""Our own rules for GitHub workflows, on top of the schema check and zizmor in `make lint`."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import REPO

WORKFLOWS = sorted((REPO / ".github" / "workflows").glob("*.yml"))


def steps(workflow: dict[str, Any]) -> list[dict[str, Any]]:
    return [s for job in workflow["jobs"].values() for s in job.get("steps", [])]


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_actions_are_pinned_and_permissions_least(path: Path) -> None:
    workflow = yaml.safe_load(path.read_text())
    assert workflow["permissions"] == {}, "grant permissions per job, none at the top"
    for job in workflow["jobs"].values():
        assert "permissions" in job
        assert "write-all" not in str(job["permissions"])
    for step in steps(workflow):
        uses = step.get("uses", "")
        if uses:
            assert re.fullmatch(r"[\w.-]+/[\w./-]+@[0-9a-f]{40}", uses), uses
        if uses.startswith("actions/checkout@"):
            assert step["with"]["persist-credentials"] is False


def test_there_are_workflows() -> None:
    assert {p.name for p in WORKFLOWS} >= {"ci.yml", "train.yml", "deploy.yml"}


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_no_expression_is_interpolated_into_a_script(path: Path) -> None:
    """Event fields, inputs and outputs reach `run:` only through `env:`."""
    for step in steps(yaml.safe_load(path.read_text())):
        assert "${{" not in step.get("run", ""), step.get("name")


def test_deploy_runs_the_canary_in_a_protected_environment() -> None:
    workflow = yaml.safe_load((REPO / ".github" / "workflows" / "deploy.yml").read_text())
    triggers = workflow[True]  # YAML 1.1 reads the `on:` key as a boolean
    assert triggers["repository_dispatch"]["types"] == ["model-promoted"]
    canary = workflow["jobs"]["canary"]
    assert canary["environment"] == "production"
    scripts = " ".join(s.get("run", "") for s in canary["steps"])
    for part in ("shipyard deploy", "--target kubernetes", "--apply"):
        assert part in scripts
