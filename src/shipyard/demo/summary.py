"""The demo's closing table: each version, what judged it, and where to look next."""

from __future__ import annotations

from typing import Any

from shipyard.tags import VersionTags

_MADE_BY = {"v1": "dvc repro", "v2": "retrain", "v3": "stages, skewed features"}
_STEP_OF = {"v1": "pipeline", "v2": "retrain", "v3": "bad version"}


def _gate(tags: dict[str, str], alias: str) -> str:
    return tags.get(f"shipyard.promotion.{alias}", "-")


def _canary(tags: dict[str, str]) -> str:
    result = tags.get("shipyard.canary.result", "-")
    failed = VersionTags.of(tags).canary_failed_gate
    return f"{result}: {failed.split(' ')[0]}" if failed else result


def version_rows(figures: dict[str, Any]) -> list[list[str]]:
    rows = []
    steps = figures.get("steps", {})
    for key in ("v1", "v2", "v3"):
        version = figures.get(key)
        if version is None or version not in figures.get("versions", {}):
            continue
        info = figures["versions"][version]
        tags = info["tags"]
        typed = VersionTags.of(tags)
        seconds = steps.get(_STEP_OF[key], 0.0)
        if key == "v2":  # retrained, then canaried
            seconds += steps.get("canary", 0.0)
        if key == "v3":  # trained while v2's canary ran, then shadowed
            seconds += figures.get("bad_version_training_seconds", 0.0)
        rows.append(
            [
                version,
                _MADE_BY[key],
                typed.data_hash.removeprefix("md5:")[:10],
                typed.candidate or "-",
                str(typed.test_metrics.get("average_precision", "-")),
                _gate(tags, "challenger"),
                _gate(tags, "champion"),
                _canary(tags),
                ",".join(f"@{a}" for a in sorted(info["aliases"])) or "-",
                f"{seconds:.0f}",
            ]
        )
    return rows


def render(figures: dict[str, Any], name: str) -> str:
    head = [
        "version",
        "made by",
        "data",
        "candidate",
        "test AP",
        "->challenger",
        "->champion",
        "canary",
        "aliases",
        "seconds",
    ]
    rows = [head, *version_rows(figures)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = ["", f"{name}: versions"]
    lines += ["  " + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    lines += ["", "traffic (client requests through Envoy)"]
    for label, t in figures.get("traffic", {}).items():
        lines.append(
            f"  {label:<12} {t['sent']:>7} sent {t['failed']:>5} failed   {t['by_variant']}"
        )
        if t.get("first_error"):
            lines.append(f"  {'':<12} first failure: {t['first_error']}")
    drift = ", ".join(f"{d['window']} -> {d['exit']}" for d in figures.get("drift", []))
    lines += ["", f"drift checks (0 none, 3 drift, 4 retrain)  {drift}"]
    for d in figures.get("drift", []):
        if "estimated" in d:
            lines.append(f"  {d['window']:<12} estimated quality: {d['estimated']}")
        if d.get("exit") in (3, 4) and "explained" in d:
            lines.append(f"  {'':<12} drifted features by cost: {d['explained']}")
    lines += ["", "step times"]
    for step, seconds in figures.get("steps", {}).items():
        lines.append(f"  {step:<16} {seconds:7.1f} s")
    lines.append(f"  {'total':<16} {figures.get('seconds', 0.0):7.1f} s")
    peak = figures.get("peak_memory_bytes", 0) / 2**30
    lines.append(f"peak memory (sum of resident sets): {peak:.2f} GiB")
    lines.append(f"processes left running: {figures.get('left_running', '?')}")
    repo = figures.get("repo", ".")
    lines += [
        "",
        "where to look (in the demo's copy)",
        f"  cd {repo}",
        "  mlflow ui --backend-store-uri sqlite:///.shipyard/mlflow.db "
        "--default-artifact-root .shipyard/mlartifacts",
        "  shipyard monitor ui                      # Evidently workspace",
        f"  ls monitoring/reports/{name}/*/           # drift reports, HTML + JSON",
        f"  shipyard deploy status {name}     # the last canary, gate by gate",
        f"  logs: {figures.get('logs', '')}",
    ]
    return "\n".join(lines)
