"""Real `dvc repro` in a copy of the repository, against the embedded sqlite MLflow store."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.integration.workspace import commit, edit_params, sh, tiny_fraud_repo

pytestmark = pytest.mark.slow
MODEL = "fraud-detector"


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    repo = tiny_fraud_repo(tmp_path_factory.mktemp("pipeline"))
    result = sh(repo, "dvc", "repro")
    yield repo, result.stdout + result.stderr


def client_for(repo: Path):
    from mlflow import MlflowClient

    uri = f"sqlite:///{repo / '.shipyard' / 'mlflow.db'}"
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def test_repro_registers_a_candidate_with_lineage(built: tuple[Path, str]) -> None:
    repo, log = built
    for stage in ("validate", "featurize", "train", "evaluate", "register"):
        assert f"Running stage '{stage}'" in log
    client = client_for(repo)
    mv = client.get_model_version_by_alias(MODEL, "candidate")
    assert str(mv.version) == "1"
    tags = mv.tags
    head = sh(repo, "git", "rev-parse", "HEAD").stdout.strip()
    assert tags["shipyard.git_sha"] == head
    recorded = yaml.safe_load((repo / "data.dvc").read_text())["outs"][0]["md5"]
    assert tags["shipyard.data_hash"] == f"md5:{recorded}"
    assert len(tags["shipyard.params_hash"]) == 16
    assert tags["shipyard.gates.pipeline"] == "passed"
    assert tags["shipyard.gate.min_roc_auc"].endswith(": passed")
    metrics = json.loads((repo / "artifacts/eval/metrics.json").read_text())["test"]
    assert float(tags["shipyard.metrics.test.roc_auc"]) == pytest.approx(metrics["roc_auc"], 1e-5)
    record = json.loads((repo / "artifacts/registered/registration.json").read_text())
    assert record["version"] == "1" and record["reference_id"] == tags["shipyard.reference_id"]
    ref = client.download_artifacts(mv.run_id, "reference/reference.parquet", str(repo / "dl"))
    import pandas as pd

    sample = pd.read_parquet(ref)
    assert len(sample) == 300 and {"score", "tx_fraud", "terminal_id_risk_7d"} <= set(sample)


def test_mlflow_holds_one_parent_run_with_a_nested_run_per_candidate(
    built: tuple[Path, str],
) -> None:
    import mlflow

    repo, _ = built
    client = client_for(repo)
    exp = client.get_experiment_by_name(MODEL)
    assert exp is not None and exp.artifact_location.startswith(
        (repo / ".shipyard" / "mlartifacts").as_uri()
    )
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId")]
    assert len(parents) == 1
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parents[0].info.run_id}
    assert sorted(c.data.tags["shipyard.candidate"] for c in children) == ["hgb", "logreg", "mlp"]
    assert parents[0].data.metrics["test_roc_auc"] > 0.6
    mlflow.set_tracking_uri(f"sqlite:///{repo / '.shipyard' / 'mlflow.db'}")
    for child in children:
        assert child.data.params["candidate"] == child.data.tags["shipyard.candidate"]
        assert {"validation_average_precision", "test_brier", "test_latency_ms_p50"} <= set(
            child.data.metrics
        )
        plots = {a.path for a in client.list_artifacts(child.info.run_id, "plots")}
        assert plots == {"plots/roc.png", "plots/pr.png", "plots/confusion.png"}
        models = mlflow.search_logged_models(
            experiment_ids=[exp.experiment_id],
            filter_string=f"source_run_id = '{child.info.run_id}'",
            output_format="list",
        )
        assert len(models) == 1
        info = mlflow.models.get_model_info(f"models:/{models[0].model_id}")
        assert info.signature is not None and "tx_amount" in info.signature.inputs.input_names()
        assert info.saved_input_example_info is not None
        assert info.flavors["sklearn"]["serialization_format"] == "skops"


def test_second_repro_reruns_nothing_and_dvc_tools_work(built: tuple[Path, str]) -> None:
    repo, _ = built
    again = sh(repo, "dvc", "repro")
    assert "Running stage" not in again.stdout + again.stderr
    assert "up to date" in sh(repo, "dvc", "status").stdout
    assert "roc_auc" in sh(repo, "dvc", "metrics", "show").stdout
    sh(repo, "dvc", "plots", "show", "-o", str(repo / "plots-out"))
    assert (repo / "plots-out" / "index.html").exists()


def test_experiment_registers_a_new_version_and_metrics_diff(
    built: tuple[Path, str], tmp_path: Path
) -> None:
    repo = tmp_path / "exp"
    shutil.copytree(built[0], repo)
    commit(repo, "results of the first run")
    sh(repo, "dvc", "exp", "run", "-S", "train.candidates.hgb.max_iter=10")
    assert str(client_for(repo).get_model_version_by_alias(MODEL, "candidate").version) == "2"
    diff = sh(repo, "dvc", "metrics", "diff", "--json").stdout
    changes = json.loads(diff)["artifacts/eval/metrics.json"]
    assert "test.latency_ms_p50" in changes


def test_failed_gate_registers_nothing_and_exits_non_zero(
    built: tuple[Path, str], tmp_path: Path
) -> None:
    repo = tmp_path / "gate"
    shutil.copytree(built[0], repo)
    edit_params(repo, {"register": {"min": {"roc_auc": 0.9999}}})
    result = sh(repo, "dvc", "repro", check=False)
    assert result.returncode != 0
    assert (
        "register: gate min_roc_auc" in result.stderr and "no version registered" in result.stderr
    )
    assert "Running stage 'train'" not in result.stdout  # only register's params changed
    assert not (repo / "artifacts" / "registered").exists()
    versions = client_for(repo).search_model_versions(f"name='{MODEL}'")
    assert [str(v.version) for v in versions] == ["1"]
