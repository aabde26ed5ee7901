"""`shipyard drift check`: read a window, judge it, decide, and write what the SRE reads.

Every outcome, including "could not judge", leaves a JSON summary and an HTML page with the
reason and the runbook step, and appends the decision to the model's decision log, which the
trigger's hysteresis and cooldown read back.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from shipyard.artifacts import progress
from shipyard.errors import ShipyardError
from shipyard.monitoring import estimate, labels, logreader, report
from shipyard.monitoring.drift import judge
from shipyard.monitoring.policy import MonitoringPolicy
from shipyard.monitoring.reference import Reference
from shipyard.monitoring.trigger import Decision, Verdict, decide
from shipyard.runtime import append_jsonl, runtime_dir
from shipyard.tags import VersionTags


def decisions_path(model: str) -> Path:
    return runtime_dir() / "monitoring" / model / "decisions.jsonl"


def prediction_log(model: str) -> Path:
    return runtime_dir() / "predictions" / model


def _history(model: str, version: str, label: str) -> list[dict[str, Any]]:
    """Earlier decisions, one per (version, window). Other versions' windows count only for
    the cooldown: they were judged against another reference."""
    path = decisions_path(model)
    if not path.exists():
        return []
    latest: dict[tuple[str, str], dict[str, Any]] = {}
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        latest[(record["version"], record["window"])] = record
    out = []
    for (v, window), record in latest.items():
        if v == version and window == label:
            continue  # the window being re-judged replaces its old decision
        out.append(record if v == version else {**record, "judged": False})
    return sorted(out, key=lambda r: r["window_end"])


def _explain(
    name: str,
    version: str,
    drifted: list[str],
    window: pd.DataFrame,
    reference: Reference,
    estimate_of: Callable[[np.ndarray], estimate.Estimate],
) -> list[dict[str, Any]]:
    """The drifted features ranked by the quality their drift costs (`explain`); the model
    is loaded only when a feature drifted."""
    from shipyard import registry
    from shipyard.monitoring import explain

    if not drifted:
        return []
    progress("drift", f"ranking {len(drifted)} drifted feature(s) by their cost in quality")
    model = registry.load_model(name, version)
    fields = reference.features
    impacts = explain.rank(
        drifted,
        window,
        reference.frame,
        lambda rows: model.predict_proba(rows[fields])[:, 1],
        estimate_of,
    )
    return [asdict(i) | {"text": i.describe()} for i in impacts]


def _warm_up_evidently() -> None:
    """Import Evidently (seconds) on a second core while the log is read."""
    import importlib
    import threading

    threading.Thread(target=importlib.import_module, args=("evidently",), daemon=True).start()


def check(
    name: str,
    ref: str,
    window: str,
    policy: MonitoringPolicy,
    *,
    budget: float,
    target: str,
    now: datetime | None = None,
    log_folder: Path | None = None,
) -> dict[str, Any]:
    """Judge one window of `name`@`ref`; the summary's decision code is the exit code.
    `target` names the label column of the version's reference sample."""
    from shipyard import registry
    from shipyard.monitoring.reference import load_reference

    _warm_up_evidently()
    try:
        start, end = logreader.parse_window(window, now)
    except ValueError as err:
        raise ShipyardError(f"drift: {err}") from None
    mv = registry.resolve(name, ref)
    version, tags = str(mv.version), VersionTags.of(mv)
    label = logreader.window_label(start, end)
    progress("drift", f"{name} v{version}, window {start.isoformat()} to {end.isoformat()}")
    folder = log_folder or prediction_log(name)
    cap, seed = policy.window.sample_rows, policy.window.seed
    log = logreader.read_window(folder, name, start, end, version, sample_rows=cap, seed=seed)
    summary: dict[str, Any] = {
        "model": name,
        "version": version,
        "window": {"start": start.isoformat(), "end": end.isoformat(), "label": label},
        "lineage": {
            "bento_tag": tags.bento_tag or "not packaged",
            "git_sha": tags.git_sha,
            "data_hash": tags.data_hash,
            "reference_id": tags.reference_id,
        },
        "rows": log.rows,
        "corrupt_lines": log.corrupt,
    }
    progress("drift", f"{log.rows} rows in the window, {log.corrupt} corrupt lines skipped")
    snapshot, reasons = None, []
    try:
        reference = load_reference(name, version)
    except ShipyardError as err:
        reference, reasons = None, [f"no reference: {err}"]
    if reference is not None and log.rows < policy.window.min_rows:
        reasons = [f"{log.rows} rows in the window; at least {policy.window.min_rows} needed"]
    elif reference is not None:
        added = sorted(set(log.features) - set(reference.features))
        removed = sorted(set(reference.features) - set(log.features))
        if added or removed:
            reasons = [f"log schema differs from the reference: added {added}, removed {removed}"]
    scores = log.frame["score"].to_numpy() if "score" in log.frame else np.empty(0)
    scale = None if reference is None else estimate.calibrate(reference.frame, target)
    estimated = (
        estimate.Estimate(log.rows, not_judged="no reference")
        if scale is None
        else estimate.calibrated(scale, scores, budget, policy.window.min_rows)
    )
    summary["estimated_quality"] = asdict(estimated)
    if reasons:
        verdict = Verdict(end.isoformat(), judged=False, drifted=False, reasons=reasons)
    else:
        assert reference is not None
        known = labels.load_labels(name)
        labelled = log.frame.merge(known[["request_id", "label"]], on="request_id")
        progress("drift", f"judging {len(log.frame)} rows ({len(labelled)} labelled)")
        judgement = judge(
            reference, log.frame, policy, labelled, budget, rows=log.rows, estimated=estimated
        )
        summary.update(judgement.summary())
        if estimated.not_judged is None and isinstance(scale, estimate.Calibration):
            calibration = scale  # each drifted feature's rescored window, estimated with it
            summary["explained"] = _explain(
                name,
                version,
                judgement.drifted_features,
                log.frame,
                reference,
                lambda s: estimate.estimate(s, calibration, budget, policy.window.min_rows),
            )
        snapshot = judgement.snapshot
        verdict = Verdict(end.isoformat(), True, judgement.drifted, judgement.reasons)
    decision: Decision = decide(_history(name, version, label), verdict, policy.trigger)
    summary["decision"] = decision.as_dict()
    folder = Path(policy.reports) / name / version
    summary["paths"] = report.paths(folder, label)
    progress("drift", f"decision: {report.OUTCOME[decision.code]}; writing the report")
    report.write(summary, snapshot, folder, label)
    report.write_atomic(Path(policy.reports) / name / "drift.prom", report.prometheus_text(summary))
    if snapshot is not None:
        report.add_to_workspace(Path(policy.workspace), name, snapshot)
        progress("drift", f"snapshot added to the Evidently workspace {policy.workspace}")
    append_jsonl(
        str(decisions_path(name).relative_to(runtime_dir())),
        {**decision.as_dict(), "version": version, "window": label, "report": summary["paths"]},
    )
    return summary
