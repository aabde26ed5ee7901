"""A throwaway copy of this repository to run real `dvc repro` in."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from shipyard.demo import scratch
from shipyard.demo.config import merge
from tests.conftest import REPO


def env() -> dict[str, str]:
    """The real environment, on embedded defaults: no tracking server, our venv first on PATH."""
    out = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("MLFLOW_TRACKING") and k != "SHIPYARD_RUNTIME_DIR"
    }
    out.update(scratch.GIT_IDENTITY)
    out["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{out.get('PATH', '')}"
    out["MLFLOW_DISABLE_TELEMETRY"] = "true"
    out["DVC_NO_ANALYTICS"] = "1"
    return out


def sh(cwd: Path, *cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(cmd, cwd=cwd, env=env(), capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        raise AssertionError(
            f"{' '.join(cmd)} exited {result.returncode}\n{result.stdout}\n{result.stderr}"
        )
    return result


def copy_repo(dest: Path) -> Path:
    """Tracked and new-but-not-ignored files only, as a fresh clone would have them."""
    return scratch.copy_repo(REPO, dest)


def commit(repo: Path, message: str) -> None:
    scratch.commit(repo, message)


def edit_params(repo: Path, changes: dict[str, Any], replace: tuple[str, ...] = ()) -> None:
    """Deep-merge `changes` into params.yaml; sections named in `replace` are swapped whole."""
    path = repo / "params.yaml"
    params = merge(
        yaml.safe_load(path.read_text()), {k: v for k, v in changes.items() if k not in replace}
    )
    params.update({k: changes[k] for k in replace})
    path.write_text(yaml.safe_dump(params, sort_keys=False))


TINY = {
    "validate": {"min_rows": 500},
    "featurize": {"split": {"validation": 0.2, "test": 0.25, "gap_days": 2}},
    "train": {
        "candidates": {
            "hgb": {"max_iter": 30},
            "mlp": {"hidden_sizes": [8], "max_epochs": 4, "patience": 2, "learning_rate": 0.01},
        }
    },
    "evaluate": {"latency_rows": 20},
    "register": {
        "min": {"roc_auc": 0.6, "average_precision": 0.05},
        "max": {"brier": 0.05},
        "reference_rows": 300,
    },
}


def tiny_fraud_repo(dest: Path) -> Path:
    """The default pipeline on a small simulated world, so a full `dvc repro` takes ~a minute."""
    from shipyard.data.simulator import Simulator, write_csv

    repo = copy_repo(dest)
    (repo / "data").mkdir()
    frame = Simulator(n_customers=250, n_terminals=500, seed=11).period(0, 60)
    write_csv(frame, str(repo / "data" / "transactions.csv"))
    sh(repo, "dvc", "add", "-q", "data")
    edit_params(repo, TINY)
    commit(repo, "tiny data and params")
    return repo
