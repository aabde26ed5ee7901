"""A fresh clone with no DVC remote gets exactly the data data.dvc names."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from tests.integration.workspace import copy_repo, sh

pytestmark = pytest.mark.slow  # each test simulates the 120-day world


def test_bootstrap_regenerates_verifies_and_is_idempotent(tmp_path: Path) -> None:
    repo = copy_repo(tmp_path / "repo")
    assert not (repo / "data").exists()
    first = sh(repo, "shipyard", "data", "bootstrap")
    assert first.stdout.strip() == "data: generated"
    assert sh(repo, "dvc", "status", "data.dvc").stdout.strip().endswith("up to date.")
    assert sh(repo, "git", "status", "--porcelain", "data.dvc").stdout == ""
    assert sh(repo, "shipyard", "data", "bootstrap").stdout.strip() == "data: present"
    # Present but not cached (e.g. copied in by hand): cached after a hash check.
    shutil.rmtree(repo / ".dvc" / "cache")
    assert sh(repo, "shipyard", "data", "bootstrap").stdout.strip() == "data: cached"


def test_bootstrap_refuses_data_that_does_not_match(tmp_path: Path) -> None:
    repo = copy_repo(tmp_path / "repo")
    meta = yaml.safe_load((repo / "data.dvc").read_text())
    meta["outs"][0]["md5"] = "0" * 32 + ".dir"
    tampered = yaml.safe_dump(meta)
    (repo / "data.dvc").write_text(tampered)
    result = sh(repo, "shipyard", "data", "bootstrap", check=False)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        "error: data: content does not hash to what data.dvc records; "
        "restore it with `dvc checkout` or `dvc pull`"
    )
    assert not (repo / "data").exists()  # nothing half-written left behind
    assert (repo / "data.dvc").read_text() == tampered


def test_bootstrap_will_not_overwrite_edited_data(tmp_path: Path) -> None:
    repo = copy_repo(tmp_path / "repo")
    sh(repo, "shipyard", "data", "bootstrap")
    with (repo / "data" / "transactions.csv").open("a") as f:
        f.write("1,2025-05-01 00:00:00,1,1,1.00,0,0\n")
    result = sh(repo, "shipyard", "data", "bootstrap", check=False)
    assert result.returncode == 1
    assert "refusing to overwrite" in result.stderr
    assert "1,2025-05-01" in (repo / "data" / "transactions.csv").read_text()[-60:]
