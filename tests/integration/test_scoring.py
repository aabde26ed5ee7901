"""`shipyard score` for real: a version registered in a sqlite store from the pipeline's own
features, raw simulated transactions in, both engines (Spark on a real local session), a kill
mid-run, bad input, and the drift check reading the output."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

from shipyard.config import Params
from shipyard.data.simulator import write_csv
from shipyard.errors import ShipyardError
from shipyard.pipeline.featurize import featurize
from tests.conftest import REPO, empty_store
from tests.integration import scoring_world

pytestmark = pytest.mark.slow
NAME = "fraud-detector"
SHIPYARD = str(Path(sys.executable).with_name("shipyard"))


@pytest.fixture(scope="module")
def world(
    tmp_path_factory: pytest.TempPathFactory,
    raw_params_module: dict[str, Any],
    store_template: Path,
) -> Iterator[dict[str, Any]]:
    """A store with one version trained on featurize's output of 60 simulated days, and 80
    days of raw transactions to score: the 60 as history, then 20 new ones."""
    root = tmp_path_factory.mktemp("scoring")
    empty_store(store_template, root)
    with scoring_world.registered(root, raw_params_module) as w:
        write_csv(w["table"], str(w["root"] / "tonight.csv"))
        yield w


@pytest.fixture(scope="module")
def raw_params_module() -> dict[str, Any]:
    return yaml.safe_load((REPO / "params.yaml").read_text())


def score(
    world: dict[str, Any], *args: str, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    root = world["root"]
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}"}
    env["SHIPYARD_RUNTIME_DIR"] = str(root / "runtime")
    # As from a shell where the virtualenv is not activated (`make` puts it first on PATH):
    # Spark's Python workers once found another interpreter there.
    venv_bin = os.path.abspath(Path(SHIPYARD).parent)
    path = env.get("PATH", "").split(os.pathsep)
    env["PATH"] = os.pathsep.join(p for p in path if p and os.path.abspath(p) != venv_bin)
    return subprocess.run(
        [SHIPYARD, "score", f"{NAME}@champion", *args],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def spark_session(world: dict[str, Any]) -> Iterator[Any]:
    """One local session for the module's in-process Spark runs, which `run.score` borrows
    (`scoring.spark.borrowed`). Each `shipyard score --engine spark` starts a JVM and Python
    workers of its own: 17 s for 3,000 rows here, against 1-2 s on a borrowed session.
    `test_spark_gives_the_same_rows_scores_and_partitions` keeps the command's own start."""
    pytest.importorskip("pyspark")
    from shipyard.scoring import spark

    session = spark.session("local[2]")
    session.conf.set("spark.sql.session.timeZone", CALLERS_ZONE)  # theirs, not for our runs
    yield session
    session.stop()


CALLERS_ZONE = "America/New_York"


def score_on_spark(world: dict[str, Any], source: str, output: Path, **options: Any) -> Any:
    """`run.score` on the borrowed session, from the world's folder as `score` runs: the
    manifest, or the ShipyardError raised."""
    from shipyard.policy import load_policy
    from shipyard.scoring import run

    root = world["root"]
    policy = load_policy(root / "registry" / "policy.yaml")
    ref, params = f"{NAME}@champion", world["params"]
    with contextlib.chdir(root):
        try:
            return run.score(ref, Path(source), output, params, policy, engine="spark", **options)
        except ShipyardError as err:
            return err


def partition_sizes(folder: Path) -> dict[str, int]:
    return {p.name: len(pd.read_parquet(p)) for p in folder.glob("date=*")}


def read(folder: Path) -> pd.DataFrame:
    frame = pd.read_parquet(folder).sort_values("request_id").reset_index(drop=True)
    return frame.astype({"date": str})  # the partition: a category of the days present


def assert_featurizes_features(out: pd.DataFrame, table: pd.DataFrame, params: Params) -> None:
    """The scored rows' features are featurize's on the whole `table`, for every row its
    splits keep (over 90% of them)."""
    splits, cols = featurize(table, params)
    expected = pd.concat(splits.values(), ignore_index=True)
    expected["request_id"] = expected["transaction_id"].astype(str)
    joined = out.merge(expected, on="request_id", suffixes=("", "_train"))
    assert len(joined) == len(expected) > 0.9 * len(out)
    for name in cols.all:
        np.testing.assert_allclose(joined[name], joined[f"{name}_train"], rtol=1e-9, atol=1e-9)


@pytest.fixture(scope="module")
def embedded(world: dict[str, Any]) -> Path:
    out = world["root"] / "out-embedded"
    done = score(world, "--input", "tonight.csv", "--output", str(out), "--chunk-rows", "4000")
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stderr.count("score: chunk") > 2  # several chunks, history carried across
    return out


def test_the_output_is_the_pipelines_features_scored_at_the_threshold(
    world: dict[str, Any], embedded: Path
) -> None:
    """Features equal featurize's on the whole table, whatever the chunking."""
    from shipyard import registry
    from shipyard.tags import VersionTags

    out = read(embedded)
    params: Params = world["params"]
    table = world["table"]
    assert len(out) == len(table)
    assert_featurizes_features(out, table, params)
    mv = registry.resolve(NAME, "@champion")
    threshold = VersionTags.of(mv).threshold_at_budget
    assert (out["decision"] == (out["score"] >= threshold)).all()
    assert set(out["model_version"]) == {str(mv.version)}
    assert set(out["model_uri"]) == {f"models:/{NAME}/{mv.version}"}
    assert out["input_hash"].nunique() == len(out)
    manifest = json.loads((embedded / "_manifest.json").read_text())
    assert manifest["rows"] == {
        "in": len(table),
        "scored": len(out),
        "rejected": 0,
        "history_only": 0,
    }
    days = sorted(pd.to_datetime(table["tx_datetime"]).dt.strftime("date=%Y-%m-%d").unique())
    assert manifest["partitions"] == days == sorted(p.name for p in embedded.glob("date=*"))


def test_rows_scored_in_slices_and_out_of_order_in_their_chunk_get_featurizes_features(
    world: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Chunks scored a few rows at a time, and rows out of time order inside each chunk
    (the carried window then keeps some older rows): the features are still featurize's on
    the same table, every row is written once, one part per chunk and day, no scratch file
    left; a row refused by `--strict` in a chunk's fourth slice leaves nothing behind."""
    from shipyard.policy import load_policy
    from shipyard.scoring import embedded as engine
    from shipyard.scoring import run

    monkeypatch.setattr(engine, "SLICE_ROWS", 700)
    root, params = world["root"], world["params"]
    table = world["table"]
    rng = np.random.default_rng(3)
    blocks = [
        table.iloc[at : at + 4000].sample(frac=1.0, random_state=rng)
        for at in range(0, len(table), 4000)
    ]
    shuffled = pd.concat(blocks, ignore_index=True)  # chunk by chunk, never back in time
    assert not shuffled["tx_datetime"].is_monotonic_increasing
    write_csv(shuffled, str(root / "shuffled.csv"))
    policy = load_policy(root / "registry" / "policy.yaml")
    out = root / "out-sliced"
    run.score(f"{NAME}@champion", root / "shuffled.csv", out, params, policy, chunk_rows=4000)
    got = read(out)
    assert len(got) == len(table) and got["request_id"].is_unique
    assert_featurizes_features(got, shuffled, params)
    chunks = -(-len(table) // 4000)
    for day in out.glob("date=*"):
        names = [p.name for p in day.iterdir()]
        assert len(names) == len(set(names)) <= chunks
        assert all(n.startswith("part-") and n.endswith(".parquet") for n in names), names

    strict = shuffled.head(4000).astype({"tx_amount": float})
    strict.loc[2500, "tx_amount"] = 1e12  # inside the contract, outside the served range
    write_csv(strict, str(root / "strict.csv"))
    with pytest.raises(ShipyardError, match=r"rule 'range'.*served range.*\(--strict\)"):
        run.score(
            f"{NAME}@champion", root / "strict.csv", root / "out-s", params, policy, strict=True
        )
    assert not (root / "out-s").exists() and not (root / ".out-s.partial").exists()


def test_spark_gives_the_same_rows_scores_and_partitions(
    world: dict[str, Any], embedded: Path
) -> None:
    pytest.importorskip("pyspark")
    out = world["root"] / "out-spark"
    done = score(
        world,
        "--input",
        "tonight.csv",
        "--output",
        str(out),
        "--engine",
        "spark",
        "--master",
        "local[2]",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    a, b = read(embedded), read(out)
    assert list(a.columns) == list(b.columns)
    assert (a["request_id"] == b["request_id"]).all()
    np.testing.assert_allclose(a["score"], b["score"], rtol=0, atol=1e-9)
    assert (a["decision"] == b["decision"]).all()
    assert (a["input_hash"] == b["input_hash"]).all()
    assert partition_sizes(embedded) == partition_sizes(out)
    manifest = json.loads((out / "_manifest.json").read_text())
    assert manifest["engine"] == "spark" and manifest["rows"]["scored"] == len(a)


def test_bad_rows_go_to_rejects_with_the_reason_or_fail_the_run_with_strict(
    world: dict[str, Any],
) -> None:
    root = world["root"]
    bad = world["later"].head(3000).reset_index(drop=True)
    bad = bad.astype({"tx_amount": object, "terminal_id": object})
    bad.loc[10, "tx_amount"] = -5.0
    bad.loc[20, "terminal_id"] = "not-a-number"
    write_csv(bad, str(root / "bad.csv"))
    out = root / "out-bad"
    done = score(world, "--input", "bad.csv", "--output", str(out))
    assert done.returncode == 0, done.stderr[-2000:]
    rejects = pd.read_parquet(out / "_rejects")
    assert sorted(rejects["reason"]) == [
        "terminal_id: type: expected int",
        "tx_amount: range: below min 0.0",
    ]
    manifest = json.loads((out / "_manifest.json").read_text())
    assert manifest["rows"] == {"in": 3000, "scored": 2998, "rejected": 2, "history_only": 0}
    strict = root / "out-strict"
    done = score(world, "--input", "bad.csv", "--output", str(strict), "--strict")
    assert done.returncode == 1
    line = done.stderr.strip().splitlines()[-1]
    assert line == "error: bad.csv: column 'tx_amount': rule 'range': below min 0.0 (--strict)"
    assert not strict.exists() and not (root / ".out-strict.partial").exists()


def test_spark_rejects_counts_and_strict_are_embeddeds(
    world: dict[str, Any], spark_session: Any
) -> None:
    """Rows the contract refuses, rows outside the served ranges, the manifest's counts and
    `--strict`: Spark's, counted from its workers' side files in one job, are embedded's."""
    root = world["root"]
    bad = world["later"].head(3000).reset_index(drop=True)
    bad = bad.astype({"tx_amount": object, "terminal_id": object})
    bad.loc[10, "tx_amount"] = -5.0
    bad.loc[20, "terminal_id"] = "not-a-number"
    for at in (30, 2900):
        bad.loc[at, "tx_amount"] = 1e12  # inside the contract, outside the served range
    # A column the contract does not name, carried into the rejects as the file gives it: a
    # doubled quote and a line break inside quoted values (RFC 4180), which Spark's own
    # defaults read as a value with its quotes and as two records.
    bad["note"] = "plain"
    bad.loc[10, "note"] = 'says "hi", twice'
    bad.loc[20, "note"] = "line one\nline two"
    write_csv(bad, str(root / "bad-both.csv"))
    outs = {engine: root / f"out-bad-{engine}" for engine in ("embedded", "spark")}
    args = ("--input", "bad-both.csv", "--output", str(outs["embedded"]), "--chunk-rows", "1000")
    done = score(world, *args)
    assert done.returncode == 0, done.stderr[-3000:]
    on_spark = score_on_spark(world, "bad-both.csv", outs["spark"])
    assert not isinstance(on_spark, ShipyardError), on_spark
    # A borrowed session is left running, with its own settings.
    assert spark_session.range(3).count() == 3
    assert spark_session.conf.get("spark.sql.session.timeZone") == CALLERS_ZONE
    ids = "transaction_id"
    a, b = (
        pd.read_parquet(o / "_rejects").sort_values(ids, key=pd.to_numeric) for o in outs.values()
    )
    assert list(a.columns) == list(b.columns)
    pd.testing.assert_frame_equal(a.reset_index(drop=True), b.reset_index(drop=True))
    # The four planted rows, and the later days' own rows past the training's ranges.
    refused = {at: str(bad.loc[at, ids]) for at in (10, 20, 30, 2900)}
    assert set(refused.values()) <= set(b[ids])  # and the later days' own out-of-range rows
    by_file = set(b.loc[b["source"] == "bad-both.csv", ids])
    assert by_file == {refused[10], refused[20]}
    notes = dict(zip(b[ids], b["note"], strict=True))
    assert (notes[refused[10]], notes[refused[20]]) == ('says "hi", twice', "line one\nline two")
    manifests = [json.loads((o / "_manifest.json").read_text()) for o in outs.values()]
    expected = {"in": 3000, "scored": 3000 - len(b), "rejected": len(b), "history_only": 0}
    assert manifests[0]["rows"] == manifests[1]["rows"] == expected
    assert manifests[0]["rejected_by_reason"] == manifests[1]["rejected_by_reason"]
    assert not [
        *outs["spark"].glob("_side*"),
        *outs["spark"].glob(".*"),
        *outs["spark"].glob("*/.*"),
    ]
    assert (read(outs["embedded"])["request_id"] == read(outs["spark"])["request_id"]).all()

    strict = {engine: root / f"out-bad-strict-{engine}" for engine in ("embedded", "spark")}
    done = score(world, "--input", "bad-both.csv", "--output", str(strict["embedded"]), "--strict")
    assert done.returncode == 1, done.stderr[-3000:]
    refused = score_on_spark(world, "bad-both.csv", strict["spark"], strict=True)
    assert isinstance(refused, ShipyardError), refused
    message = "bad-both.csv: column 'tx_amount': rule 'range': below min 0.0 (--strict)"
    assert done.stderr.strip().splitlines()[-1] == f"error: {message}"
    assert str(refused) == message
    for out in strict.values():
        assert not out.exists() and not (root / f".{out.name}.partial").exists()


def test_a_row_of_the_wrong_width_stops_either_engine_with_one_line(
    world: dict[str, Any], spark_session: Any
) -> None:
    """More or fewer fields than the header is a broken file, not a bad value. Spark's default
    read dropped the extra fields and scored the row; embedded raised Arrow's error with a
    traceback and kept its partial output. Both now stop with the same line, leaving nothing."""
    root = world["root"]
    lines = (root / "tonight.csv").read_text().splitlines()  # 2 MB: chunks are written first
    width = len(lines[0].split(","))
    bad = len(lines) - 10
    lines[bad] += ",9,9"
    (root / "ragged.csv").write_text("\n".join(lines) + "\n")
    expected = (
        f"ragged.csv: rule 'csv': a row of {width + 2} fields where the header has "
        f"{width}: {lines[bad]}"
    )
    outs = {engine: root / f"out-ragged-{engine}" for engine in ("embedded", "spark")}
    args = ("--input", "ragged.csv", "--output", str(outs["embedded"]), "--chunk-rows", "1000")
    done = score(world, *args)
    assert done.returncode == 1, done.stderr[-3000:]
    assert done.stderr.strip().splitlines()[-1] == f"error: {expected}"
    assert str(score_on_spark(world, "ragged.csv", outs["spark"])) == expected
    for out in outs.values():
        assert not out.exists() and not (root / f".{out.name}.partial").exists()


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            "drop_column",
            "error: bad-file.csv: column 'customer_id': rule 'columns': required column is missing",
        ),
        ("unknown_alias", "error: fraud-detector: no version @nosuch"),
        ("shuffled", "rule 'order': chunk 2 goes back in time"),
    ],
)
def test_bad_input_is_one_line_and_leaves_no_output(
    world: dict[str, Any], change: str, expected: str
) -> None:
    root = world["root"]
    frame = world["later"].head(9000)
    args = ["--input", "bad-file.csv", "--output", str(root / "out-x"), "--chunk-rows", "3000"]
    if change == "drop_column":
        frame = frame.drop(columns="customer_id")
    elif change == "shuffled":
        frame = pd.concat([frame.iloc[3000:6000], frame.iloc[:3000], frame.iloc[6000:]])
    write_csv(frame, str(root / "bad-file.csv"))
    if change == "unknown_alias":
        done = subprocess.run(
            [SHIPYARD, "score", f"{NAME}@nosuch", *args],
            cwd=root,
            env={**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}"},
            capture_output=True,
            text=True,
            timeout=300,
        )
    else:
        done = score(world, *args)
    assert done.returncode == 1
    line = done.stderr.strip().splitlines()[-1]
    assert expected in line, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    assert not (root / "out-x").exists() and not (root / ".out-x.partial").exists()


def test_a_killed_run_leaves_nothing_visible_and_the_rerun_resumes_to_the_same_output(
    world: dict[str, Any], embedded: Path
) -> None:
    root = world["root"]
    out = root / "out-killed"
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}"}
    cmd = [SHIPYARD, "score", f"{NAME}@champion", "--input", "tonight.csv"]
    cmd += ["--output", str(out), "--chunk-rows", "4000"]
    proc = subprocess.Popen(cmd, cwd=root, env=env, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    for line in proc.stderr:
        if "score: chunk 2:" in line:
            break
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert not out.exists()  # nothing visible
    partial = root / ".out-killed.partial"
    assert json.loads((partial / "journal.json").read_text())["chunks"] >= 2
    done = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "resuming after chunk" in done.stderr
    assert not partial.exists()
    pd.testing.assert_frame_equal(read(out), read(embedded))
    manifest = json.loads((out / "_manifest.json").read_text())
    assert manifest["rows"]["scored"] == len(world["table"])


def test_since_writes_the_new_rows_with_the_history_before_them(
    world: dict[str, Any], embedded: Path
) -> None:
    """The nightly case: the earlier rows are only history; the new ones score exactly as
    in the run that wrote every row."""
    later = world["later"]
    first = pd.Timestamp(later["tx_datetime"].min()).normalize() + pd.Timedelta(days=1)
    out = world["root"] / "out-since"
    done = score(
        world, "--input", "tonight.csv", "--output", str(out), "--since", first.isoformat()
    )
    assert done.returncode == 0, done.stderr[-2000:]
    got, every = read(out), read(embedded)
    expected = every[every["timestamp"] >= first.strftime("%Y-%m-%dT%H:%M:%S.000+00:00")]
    pd.testing.assert_frame_equal(got, expected.reset_index(drop=True))
    manifest = json.loads((out / "_manifest.json").read_text())
    assert manifest["rows"]["history_only"] == len(every) - len(got) > 0


def test_since_inside_a_chunk_whose_first_slices_are_history(
    world: dict[str, Any], embedded: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The nightly run on a file larger than a slice: the chunk's first slices are all
    history before `--since`, and the rows after it are still written, exactly."""
    from shipyard.policy import load_policy
    from shipyard.scoring import embedded as engine
    from shipyard.scoring import run

    monkeypatch.setattr(engine, "SLICE_ROWS", 700)
    root, table = world["root"], world["table"]
    first = pd.Timestamp(world["later"]["tx_datetime"].min()).normalize() + pd.Timedelta(days=1)
    policy = load_policy(root / "registry" / "policy.yaml")
    out = root / "out-since-sliced"
    run.score(
        f"{NAME}@champion",
        root / "tonight.csv",
        out,
        world["params"],
        policy,
        chunk_rows=len(table),
        since=first.isoformat(),
    )
    got, every = read(out), read(embedded)
    expected = every[every["timestamp"] >= first.strftime("%Y-%m-%dT%H:%M:%S.000+00:00")]
    pd.testing.assert_frame_equal(got, expected.reset_index(drop=True))


def test_an_existing_output_is_kept_unless_overwrite(world: dict[str, Any], embedded: Path) -> None:
    before = sorted(p.name for p in embedded.rglob("*"))
    done = score(world, "--input", "tonight.csv", "--output", str(embedded))
    assert done.returncode == 1
    assert done.stderr.strip().endswith("output exists; remove it or give --overwrite")
    assert sorted(p.name for p in embedded.rglob("*")) == before
    # --overwrite with input that fails keeps the old output whole: nothing is lost
    broken = world["later"].head(100).drop(columns="tx_amount")
    write_csv(broken, str(world["root"] / "no-amount.csv"))
    done = score(world, "--input", "no-amount.csv", "--output", str(embedded), "--overwrite")
    assert done.returncode == 1
    assert sorted(p.name for p in embedded.rglob("*")) == before


def test_drift_check_reads_a_batch_as_it_reads_the_apis_log(
    world: dict[str, Any], embedded: Path, tmp_path: Path
) -> None:
    """The same rows, once as the batch wrote them and once as the service logs them
    (`PredictionLog`, the service's writer), give the same window to judge."""
    from shipyard.monitoring import logreader
    from shipyard.serving.predlog import PredictionLog

    out = read(embedded)
    features = [c for c in out.columns if c not in (*logreader._META, *logreader._BATCH_ONLY)]
    log = PredictionLog(tmp_path / "api")
    for row in out.to_dict("records"):
        log.append(
            {
                **{k: row[k] for k in logreader._META},
                "model_version": str(row["model_version"]),
                "features": {k: row[k] for k in features},
            }
        )
    log.close()
    start = pd.Timestamp(out["timestamp"].min()).to_pydatetime()
    end = pd.Timestamp(out["timestamp"].max()).to_pydatetime() + pd.Timedelta(seconds=1)
    from_batch = logreader.read_window(embedded, NAME, start, end, "1")
    # the API log's files are skipped by mtime when written before the window: not here
    from_api = logreader.read_window(tmp_path / "api", NAME, start, end, "1")
    assert from_batch.rows == from_api.rows == len(out)
    assert sorted(from_batch.features) == sorted(from_api.features) == sorted(features)
    a = from_batch.frame.sort_values("request_id").reset_index(drop=True)
    b = from_api.frame.sort_values("request_id").reset_index(drop=True)[list(a.columns)]
    pd.testing.assert_frame_equal(a, b, check_dtype=False)
