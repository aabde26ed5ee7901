"""Claim: `shipyard drift check` judges 1M logged rows against a 100k-row reference at least
4x faster than Evidently run naively on the full window, under 1 GB, at the same verdicts.

Setup (synthetic, seeded): a registered logistic regression on 20 numeric features with a
100k-row reference; prediction logs of 100k and 1M rows in the service's own JSON-lines
format, where 6 of the 20 features are shifted. Each side runs as its own process, from
import to verdict, and its peak RSS is read from the kernel (ru_maxrss):

- ours: `shipyard drift check` (reads the log window, samples to `window.sample_rows`,
  Evidently on the sample, reports, workspace snapshot, decision);
- naive: `pd.read_json(lines=True)` of the log, then `DataDriftPreset` on every row with the
  same methods and thresholds.

Run with `make benchmarks` or `.venv/bin/python -m benchmarks.drift`.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from benchmarks._timing import env, scratch

ROOT = Path(__file__).resolve().parents[1]
NAME = "bench-drift"
FEATURES = [f"f{i:02d}" for i in range(20)]
SHIFTED = FEATURES[:6]

NAIVE = textwrap.dedent(
    """\
    import json, sys, pandas as pd
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset
    log, ref_path, features = sys.argv[1], sys.argv[2], sys.argv[3].split(",")
    raw = pd.read_json(log, lines=True)
    current = pd.concat([pd.json_normalize(raw["features"]), raw[["score"]]], axis=1)
    reference = pd.read_parquet(ref_path)
    definition = DataDefinition(numerical_columns=features)
    report = Report([DataDriftPreset(columns=features, num_method="wasserstein",
                                     num_threshold=0.1, drift_share=0.3)])
    snap = report.run(Dataset.from_pandas(current[features], data_definition=definition),
                      Dataset.from_pandas(reference[features], data_definition=definition))
    drifted = sorted(m["config"]["column"] for m in snap.dict()["metrics"]
                     if m["config"]["type"].endswith(":ValueDrift") and m["value"] >= 0.1)
    print(json.dumps(drifted))
    """
)


def frame(n: int, seed: int, shift: bool) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    data = {f: rng.normal(size=n) for f in FEATURES}
    if shift:
        for f in SHIFTED:
            data[f] = data[f] + 0.6
    return pd.DataFrame(data)


def register(tmp: Path) -> str:
    from sklearn.linear_model import LogisticRegression

    from shipyard import registry, tracking
    from shipyard.config import BaseSection, TrackingConfig
    from shipyard.models import storage

    tracking.configure(BaseSection(seed=0, model_name=NAME, tracking=TrackingConfig()))
    train = frame(100_000, 1, False)
    y = train["f00"] + train["f01"] + np.random.default_rng(2).normal(size=len(train)) > 2
    model = LogisticRegression().fit(train, y.astype(int))
    reference = train.assign(score=model.predict_proba(train)[:, 1], label=y.astype(int))
    path = tmp / "reference.parquet"
    reference.to_parquet(path, index=False)
    with tracking.pipeline_run("pipeline", {}), tracking.candidate_run("logreg", {}) as run_id:
        logged = tracking.log_model(model, train.head(3), storage.trusted_types(model), [])
        tracking.log_artifact(path, "reference")
    tags = {"shipyard.reference_uri": f"runs:/{run_id}/reference/reference.parquet"}
    version = registry.register_version(logged["model_uri"], NAME, run_id, tags)
    registry.set_alias(NAME, "champion", version)
    return version


def write_log(folder: Path, n: int, version: str, start: datetime) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rows = frame(n, 3, True)
    scores = np.random.default_rng(4).uniform(size=n)
    step = timedelta(seconds=3600 / n)
    with (folder / f"predictions-{n}.jsonl").open("w") as out:
        for i, rec in enumerate(rows.to_dict("records")):
            line = {
                "request_id": f"r{i}",
                "timestamp": (start + step * i).isoformat(timespec="milliseconds"),
                "model_name": NAME,
                "model_version": version,
                "features": rec,
                "score": float(scores[i]),
                "decision": bool(scores[i] > 0.9),
            }
            out.write(json.dumps(line) + "\n")


def measure(cmd: list[str], cwd: Path, run_env: dict[str, str]) -> tuple[float, float, str, int]:
    """Wall seconds, peak RSS in MB, stdout and exit code of one process run alone.

    The peak is the kernel's VmHWM of the process after exec, polled until it exits:
    `ru_maxrss` would also count the pages the child shared with this (large) process
    between fork and exec.
    """
    start = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=cwd, env=run_env, stdout=subprocess.PIPE, text=True)
    chunks: list[str] = []
    out = proc.stdout
    assert out is not None
    reader = threading.Thread(target=lambda: chunks.append(out.read()), daemon=True)
    reader.start()
    peak_kb = 0
    status = Path(f"/proc/{proc.pid}/status")
    while proc.poll() is None:
        with contextlib.suppress(OSError, IndexError, ValueError):
            peak_kb = max(peak_kb, int(status.read_text().split("VmHWM:")[1].split()[0]))
        time.sleep(0.05)
    reader.join()
    return time.monotonic() - start, peak_kb / 1024, "".join(chunks), proc.returncode


def main() -> None:
    tmp = scratch("bench-drift-")
    run_env = {
        **env(),
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp / 'mlflow.db'}",
        "SHIPYARD_RUNTIME_DIR": str(tmp / "runtime"),
    }
    os.environ.update(run_env)
    version = register(tmp)
    policy = yaml.safe_load((ROOT / "monitoring" / "policy.yaml").read_text())
    policy.update(workspace=str(tmp / "workspace"), reports=str(tmp / "reports"))
    (tmp / "monitoring.yaml").write_text(yaml.safe_dump(policy))
    (tmp / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    (tmp / "registry").mkdir()
    (tmp / "registry" / "policy.yaml").write_text((ROOT / "registry" / "policy.yaml").read_text())
    start = datetime(2026, 1, 1, tzinfo=UTC)
    window = f"{start.isoformat()}/{(start + timedelta(hours=2)).isoformat()}"
    (tmp / "naive.py").write_text(NAIVE)
    ref_path = tmp / "reference.parquet"
    print(
        f"drift job vs naive Evidently, 20 numeric features ({len(SHIFTED)} shifted), "
        f"100k-row reference (goal: >= 4x faster, < 1 GB, same verdicts)"
    )
    print(f"  {'rows':>9} {'side':<8} {'wall s':>7} {'peak MB':>8}  drifted features")
    for n in (100_000, 1_000_000):
        logs = tmp / f"log-{n}"
        write_log(logs, n, version, start)
        ours = measure(
            [str(Path(sys.executable).with_name("shipyard")), "drift", "check", NAME,
             "--window", window, "--log-folder", str(logs),
             "--monitoring-policy", str(tmp / "monitoring.yaml")],
            tmp, run_env,
        )  # fmt: skip
        summary = json.loads(max((tmp / "reports" / NAME / version).glob("*.json")).read_text())
        naive = measure(
            [sys.executable, str(tmp / "naive.py"), str(logs / f"predictions-{n}.jsonl"),
             str(ref_path), ",".join(FEATURES)],
            tmp, run_env,
        )  # fmt: skip
        ours_drifted = sorted(summary.get("drifted_features", []))
        naive_drifted = json.loads(naive[2].strip().splitlines()[-1]) if naive[3] == 0 else "failed"
        print(
            f"  {n:>9} {'shipyard':<8} {ours[0]:7.1f} {ours[1]:8.0f}  {ours_drifted} "
            f"(exit {ours[3]})"
        )
        print(f"  {n:>9} {'naive':<8} {naive[0]:7.1f} {naive[1]:8.0f}  {naive_drifted}")
        print(
            f"  {'':>9} speed-up {naive[0] / ours[0]:.1f}x, same verdicts: "
            f"{ours_drifted == naive_drifted}"
        )


if __name__ == "__main__":
    main()
