"""Shared fixtures: fresh params per test, an isolated MLflow store and runtime folder, no
runs left open."""

from __future__ import annotations

import copy
import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from shipyard.collector import collect_less

# Two pytest workers share two cores: one OpenMP, BLAS and torch thread each, in the workers
# and in every process they start. With a thread per core in each, the threads spin against
# each other: the e2e demo's 16,106-row boosted model took 9.3 s to fit.
for _threads in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_threads, "1")

# The tests' Spark JVMs (the scoring tests' session, `shipyard score --engine spark`) live for
# seconds, where C2's compilations cost more CPU than they return: with C1 only, a JVM spent
# about a third less (`benchmarks.spark_jit`). What they compute is the same.
os.environ.setdefault("SPARK_SUBMIT_OPTS", "-XX:TieredStopAtLevel=1")

collect_less()  # the workers fit models and import what the commands import

REPO = Path(__file__).resolve().parents[1]
DECISION_KEY = "test-decision-key"  # decisions are signed in every test


@pytest.fixture
def raw_params() -> dict[str, Any]:
    return copy.deepcopy(yaml.safe_load((REPO / "params.yaml").read_text()))


@pytest.fixture(scope="session")
def store_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty MLflow sqlite store, made by MLflow once per worker. Its migrations took
    0.7 s for each fresh store, and about fifty tests and worlds start one."""
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    path = tmp_path_factory.mktemp("store-template") / "mlflow.db"
    SqlAlchemyStore(f"sqlite:///{path}", str(path.parent / "mlruns")).engine.dispose()
    return path


def empty_store(template: Path, folder: Path) -> str:
    """A tracking URI for a new store in folder, copied from the template."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(template, folder / "mlflow.db")
    return f"sqlite:///{folder / 'mlflow.db'}"


@pytest.fixture(autouse=True)
def isolated_tracking(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> Iterator[None]:
    """Every test gets its own sqlite store and must close every run it opens.

    Integration and e2e tests nearly all open it, so theirs starts as a copy of the template;
    in unit tests, which seldom do, MLflow makes it on first use (two of them check that
    nothing else is in their folder)."""
    if "unit" in request.node.path.relative_to(REPO).parts[:2]:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    else:
        template = request.getfixturevalue("store_template")
        monkeypatch.setenv("MLFLOW_TRACKING_URI", empty_store(template, tmp_path))
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    monkeypatch.setenv("SHIPYARD_DECISION_KEY", DECISION_KEY)
    if "SHIPYARD_RUNTIME_DIR" not in os.environ:  # a module's own world keeps its folder
        # Locks, audit logs and prediction logs of one test never meet another's, even when
        # two pytest workers share the checkout.
        monkeypatch.setenv("SHIPYARD_RUNTIME_DIR", str(tmp_path / "runtime"))
    yield
    mlflow = sys.modules.get("mlflow")
    if mlflow is not None and mlflow.active_run() is not None:
        run_id = mlflow.active_run().info.run_id
        while mlflow.active_run() is not None:
            mlflow.end_run()
        pytest.fail(f"test left MLflow run {run_id} open")


def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """One worker per test file. A demo run (a session fixture) is asked for by one file
    only: the embedded one by `test_demo.py`, the team stack's by `test_demo_stack.py`, so
    the two runs can go to two workers and neither runs twice."""
    from xdist.scheduler import LoadFileScheduling

    class ByFile(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return nodeid.split("::", 1)[0]

    return ByFile(config, log)


# The longest suites first, each on its own worker as one frees up: the run then ends on short
# ones instead of one worker alone on a seven-minute file while the other idles.
LONGEST_FIRST = (
    "tests/e2e/",
    "tests/integration/test_canary_faults.py",
    "tests/integration/test_pipeline.py",
    "tests/integration/test_serving.py",
    "tests/integration/test_other_dataset.py",
    "tests/integration/test_canary.py",
    "tests/integration/test_promotion.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        path = item.nodeid.split("::", 1)[0]
        return next(
            (i for i, p in enumerate(LONGEST_FIRST) if path.startswith(p)), len(LONGEST_FIRST)
        )

    items.sort(key=rank)  # stable: within a rank, collection order; the same on every worker
