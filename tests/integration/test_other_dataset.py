"""The pipeline is not tied to the fraud data: a loans table with another shape, through
nothing but the `data` section of params.yaml (plus switching the fraud-only features off)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.integration.workspace import commit, copy_repo, edit_params, sh

pytestmark = pytest.mark.slow


def loans(n: int = 4000, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    income = rng.lognormal(10.5, 0.5, n)
    amount = rng.uniform(1_000, 40_000, n)
    purpose = rng.choice(["car", "home", "education", "business"], n)
    term = rng.choice([12, 24, 36, 60], n)
    risk = 2.5 * amount / income + (purpose == "business") * 0.8 + term / 60 - 2.2
    default = rng.uniform(size=n) < 1 / (1 + np.exp(-risk))
    return pd.DataFrame(
        {
            "loan_ref": [f"L{i:06d}" for i in range(n)],
            "applied_at": pd.Timestamp("2024-01-01")
            + pd.to_timedelta(np.sort(rng.uniform(0, 365, n)), "D"),
            "income": income.round(2),
            "loan_amount": amount.round(2),
            "term_months": term,
            "purpose": purpose,
            "region": rng.choice(["north", "south"], n),
            "defaulted": np.where(default, "yes", "no"),
        }
    )


LOANS = {
    "data": {
        "path": "data/loans.parquet",
        "format": "parquet",
        "id": "loan_ref",
        "timestamp": "applied_at",
        "target": "defaulted",
        "positive_label": "yes",
        "negative_label": "no",
        "columns": {
            "loan_ref": {"type": "string"},
            "applied_at": {"type": "datetime"},
            "income": {"type": "float", "min": 0},
            "loan_amount": {"type": "float", "min": 0},
            "term_months": {"type": "int", "min": 1},
            "purpose": {"type": "string", "categories": ["car", "home", "education", "business"]},
            "defaulted": {"type": "string"},
        },
        "features": {
            "numeric": ["income", "loan_amount", "term_months"],
            "categorical": ["purpose"],
        },
    },
    "validate": {"min_rows": 1000, "min_positive_rate": 0.01, "max_positive_rate": 0.6},
    "featurize": {
        "split": {"validation": 0.2, "test": 0.2, "gap_days": 0},
        "calendar": False,
        "spending": None,
        "risk": None,
    },
    "train": {"candidates": {"mlp": {"max_epochs": 5}, "hgb": {"max_iter": 30}}},
    "evaluate": {"latency_rows": 20},
    "register": {"min": {"roc_auc": 0.6}, "max": {"brier": 0.3}, "reference_rows": 200},
}


def test_loans_dataset_runs_through_the_same_pipeline(tmp_path: Path) -> None:

    repo = copy_repo(tmp_path / "repo")
    (repo / "data").mkdir()
    loans().to_parquet(repo / "data" / "loans.parquet", index=False)
    sh(repo, "dvc", "add", "-q", "data")
    edit_params(repo, LOANS, replace=("data",))
    commit(repo, "loans")
    sh(repo, "dvc", "repro")

    # Checked from a fresh process, like a user would: the registry as dvc repro left it.
    check = sh(repo, sys.executable, "-c", CHECK)
    report = json.loads(check.stdout.strip().splitlines()[-1])
    assert report["roc_auc"] > 0.6
    assert report["inputs"] == ["income", "loan_amount", "term_months", "purpose"]
    assert report["scores_shape"] == [5, 2]


CHECK = """
import json
import mlflow
from mlflow import MlflowClient
from mlflow.models import get_model_info
from tests.integration.test_other_dataset import loans

uri = "sqlite:///.shipyard/mlflow.db"
mlflow.set_tracking_uri(uri)
mv = MlflowClient(tracking_uri=uri, registry_uri=uri).get_model_version_by_alias(
    "fraud-detector", "candidate")
inputs = get_model_info(mv.source).signature.inputs.input_names()
model = mlflow.pyfunc.load_model("models:/fraud-detector@candidate")
# Numeric fields are doubles in the signature: callers send numbers as floats.
request = loans(5, seed=1)[inputs].astype({"term_months": "float64"})
print(json.dumps({"roc_auc": float(mv.tags["shipyard.metrics.test.roc_auc"]), "inputs": inputs,
                  "scores_shape": list(model.predict(request).shape)}))
"""
