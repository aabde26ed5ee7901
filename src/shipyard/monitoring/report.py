"""What an SRE reads: the HTML report with a header and a runbook, the JSON summary, a
Prometheus text file of the headline figures, and a snapshot in the Evidently workspace."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from shipyard.artifacts import atomic_file
from shipyard.monitoring.explain import TOP
from shipyard.monitoring.trigger import CANNOT_JUDGE, DRIFT, NO_DRIFT, TRIGGER

RUNBOOK = {
    NO_DRIFT: "No drift. Nothing to do; the next scheduled check runs as usual.",
    DRIFT: (
        "Drift, not yet sustained. Read the drifted features below: an upstream change "
        "(new terminal ids, a unit change, a broken feed) is fixed at the source, not by "
        "retraining. If it is real change in the traffic, the trigger retrains once it holds."
    ),
    TRIGGER: (
        "Sustained drift: retraining was triggered. Watch the new @candidate through "
        "`shipyard promote` and its canary (`shipyard deploy status`). If live quality dropped, "
        "consider `shipyard rollback` to @previous while the retrain runs."
    ),
    CANNOT_JUDGE: (
        "Could not judge this window (see the reason). Too few rows: check that traffic "
        "reaches the service and that the log folder is right. Missing reference or a schema "
        "change: the serving version and the log disagree; redeploy or re-register."
    ),
}
OUTCOME = {
    NO_DRIFT: "no drift",
    DRIFT: "drift",
    TRIGGER: "retrain triggered",
    CANNOT_JUDGE: "not judged",
}


def header(summary: dict[str, Any]) -> str:
    """An HTML block naming what the report describes, the decision and the runbook step."""
    code = summary["decision"]["code"]
    facts = {
        "model": f"{summary['model']} version {summary['version']}",
        "Bento": summary["lineage"].get("bento_tag", "not packaged"),
        "git sha": summary["lineage"].get("git_sha", "unknown"),
        "data hash": summary["lineage"].get("data_hash", "unknown"),
        "window": f"{summary['window']['start']} to {summary['window']['end']}",
        "rows": f"{summary['rows']} logged, {summary.get('sampled', 0)} judged, "
        f"{summary['corrupt_lines']} corrupt lines skipped",
        "estimated quality": estimated_text(summary),
        "drifted features by cost": explained_text(summary),
        "outcome": OUTCOME[code],
    }
    rows = "".join(
        f"<tr><th style='text-align:left;padding-right:1em'>{html.escape(k)}</th>"
        f"<td>{html.escape(str(v))}</td></tr>"
        for k, v in facts.items()
    )
    reasons = "".join(f"<li>{html.escape(r)}</li>" for r in summary["decision"]["reasons"])
    problems = "".join(
        f"<li>{html.escape(p)}</li>" for p in summary.get("data_quality_problems", [])
    )
    return (
        "<section id='shipyard-header' style='font-family:sans-serif;margin:1em'>"
        f"<h1>Drift report: {html.escape(summary['model'])} v{html.escape(summary['version'])}</h1>"
        f"<table>{rows}</table><h2>Why</h2><ul>{reasons or '<li>no drift found</li>'}</ul>"
        + (f"<h2>Data quality</h2><ul>{problems}</ul>" if problems else "")
        + f"<h2>Runbook</h2><p>{html.escape(RUNBOOK[code])}</p></section>"
    )


def explained_text(summary: dict[str, Any]) -> str:
    """The drifted features that cost the most estimated quality, or why none are named."""
    drifted = summary.get("drifted_features")
    if drifted is None:
        return "not judged"
    if not drifted:
        return "no feature drifted"
    explained = summary.get("explained") or []
    if not explained:
        reason = (summary.get("estimated_quality") or {}).get("not_judged") or "no estimate"
        return f"not ranked ({reason}); drifted: {', '.join(drifted)}"
    costly = [e["text"] for e in explained[:TOP] if e["gain"] is not None and e["gain"] > 0]
    if not costly:  # undoing any of them would not raise the estimate: the drift cost nothing
        return f"none of the {len(drifted)} drifted features costs estimated quality"
    return "; ".join(costly)


def estimated_text(summary: dict[str, Any]) -> str:
    """The label-free estimate in one line, next to the realised figures where labels came."""
    est = summary.get("estimated_quality") or {"not_judged": "not computed"}
    if est.get("not_judged"):
        return f"not judged: {est['not_judged']}"
    text = (
        f"average precision {est['average_precision']:.3f}, ROC AUC {est['roc_auc']:.3f}, "
        f"precision at the alert budget {est['precision_at_budget']:.3f} "
        f"(from {est['rows']} scores, no labels"
    )
    base = est.get("baseline") or {}
    if base.get("average_precision") is not None:
        text += f"; average precision {base['average_precision']:.3f} on the reference"
    text += ")"
    live = summary.get("live_quality", {})
    realised = [f"{m.replace('_', ' ')} {v['live']:.3f}" for m, v in sorted(live.items())]
    return text + (f"; realised: {', '.join(realised)}" if realised else "")


ESTIMATED = {
    "average_precision": "shipyard_drift_estimated_average_precision",
    "roc_auc": "shipyard_drift_estimated_roc_auc",
    "precision_at_budget": "shipyard_drift_estimated_precision_at_budget",
}


def prometheus_text(summary: dict[str, Any]) -> str:
    """Headline figures for node_exporter's textfile collector or a Pushgateway."""
    from prometheus_client import CollectorRegistry, Gauge, generate_latest

    figures = {
        "shipyard_drift_rows": ("Prediction-log rows the check read", summary["rows"]),
        "shipyard_drift_corrupt_lines": (
            "Log lines that were not records",
            summary["corrupt_lines"],
        ),
        "shipyard_drift_feature_share": (
            "Share of features that drifted",
            summary.get("drift_share", 0.0),
        ),
        "shipyard_drift_score": (
            "Drift of the score distribution",
            summary.get("score_drift", float("nan")),
        ),
        "shipyard_drift_detected": ("1 when drift was found", int(summary["decision"]["drifted"])),
        "shipyard_drift_retrain_triggered": (
            "1 when the check asked for retraining",
            int(summary["decision"]["triggered"]),
        ),
        "shipyard_drift_exit_code": ("The check's exit code", summary["decision"]["code"]),
    }
    # Estimated figures only when judged: a window too small has no number, not a NaN.
    est = summary.get("estimated_quality") or {}
    for key, name in ESTIMATED.items():
        if est.get(key) is not None:
            figures[name] = (f"{key} estimated from scores alone (no labels)", est[key])
    registry = CollectorRegistry()
    for name, (doc, value) in figures.items():
        gauge = Gauge(name, doc, ["model_name", "model_version"], registry=registry)
        gauge.labels(str(summary["model"]), str(summary["version"])).set(float(value))
    return generate_latest(registry).decode()


def write_atomic(path: Path, text: str) -> None:
    with atomic_file(path) as scratch:
        scratch.write_text(text)


def paths(folder: Path, label: str) -> dict[str, str]:
    return {"html": str(folder / f"{label}.html"), "json": str(folder / f"{label}.json")}


def write(summary: dict[str, Any], snapshot: Any, folder: Path, label: str) -> None:
    """`folder/<label>.html` (Evidently's report under our header) and `.json`."""
    page = (
        snapshot.get_html_str(as_iframe=False)
        if snapshot is not None
        else "<html><body></body></html>"
    )
    marker = page.find("<body")
    at = page.find(">", marker) + 1 if marker >= 0 else 0
    page = page[:at] + header(summary) + page[at:]
    out = paths(folder, label)
    write_atomic(Path(out["html"]), page)
    write_atomic(Path(out["json"]), json.dumps(summary, indent=2, default=str) + "\n")


def add_to_workspace(workspace: Path, model: str, snapshot: Any) -> str:
    """The run goes to the Evidently workspace that `shipyard monitor ui` serves."""
    from evidently.ui.workspace import Workspace

    ws = Workspace.create(str(workspace))
    found = ws.search_project(model)
    project = found[0] if found else ws.create_project(model, description="shipyard drift checks")
    ws.add_run(project.id, snapshot, include_data=False)
    return str(project.id)
