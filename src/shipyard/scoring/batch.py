"""`shipyard score`: where a batch run writes, its manifest, and how a killed run resumes.

The output appears whole or not at all: parts are written under a hidden `.NAME.partial`
folder beside it, each part renamed into place once complete, and the folder renamed to
NAME after the manifest. A journal in the partial folder records the chunks done; a rerun
with the same input, model and settings resumes after them, any other rerun starts over.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from shipyard.artifacts import progress, write_json
from shipyard.errors import ShipyardError
from shipyard.scoring.model import ScoringModel

if TYPE_CHECKING:
    import pandas as pd

JOURNAL = "journal.json"
MANIFEST = "_manifest.json"  # "_" and "." names: dataset readers (Arrow, Spark) skip them
REJECTS = "_rejects"
SUFFIXES = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}


@dataclass
class Counts:
    rows_in: int = 0
    rows_scored: int = 0
    rows_rejected: int = 0
    reasons: Counter[str] = field(default_factory=Counter)

    def add(self, rows_in: int, scored: int, reasons: list[str]) -> None:
        self.rows_in += rows_in
        self.rows_scored += scored
        self.rows_rejected += len(reasons)
        self.reasons.update(reasons)


@dataclass(frozen=True)
class Job:
    model: ScoringModel
    inputs: list[Path]
    output: Path
    engine: str
    chunk_rows: int
    strict: bool
    params_hash: str
    since: str | None = None  # log-format time: rows before it are history only, not written
    overwrite: bool = False  # replace an existing output, once the new one is whole

    def kept(self, out: Any) -> Any:
        """The scored rows to write: those at or after `since`."""
        return out if self.since is None else out[out["timestamp"] >= self.since]

    @property
    def partial(self) -> Path:
        return self.output.with_name(f".{self.output.name}.partial")

    def fingerprint(self) -> str:
        """What must be unchanged for a partial run to be resumed."""
        stats = [(str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in self.inputs]
        facts = [stats, self.model.name, self.model.version, self.model.threshold, self.engine]
        facts += [self.chunk_rows, self.strict, self.params_hash, self.since]
        return hashlib.sha256(json.dumps(facts, default=str).encode()).hexdigest()[:16]


def write_part(table: Any, folder: Path, name: str, scratch: str | None = None) -> None:
    """A whole part file or none: written beside (as `scratch`, else `.NAME`), then renamed."""
    import pyarrow.parquet as pq

    folder.mkdir(parents=True, exist_ok=True)
    beside = folder / (scratch or f".{name}")
    pq.write_table(table, beside)
    beside.replace(folder / name)


class DayParts:
    """One part file per day of a chunk (embedded) or a task (Spark), `date=D/NAME`, written
    a slice at a time (a row group each) and renamed into place when the chunk is done: the
    model's and the output's working memory follow the slice. Left early (an error, a strict
    failure), no part of the chunk is renamed into place."""

    def __init__(self, folder: Path, name: str) -> None:
        self.folder, self.name = folder, name
        self.writers: dict[str, Any] = {}
        self.schema: Any = None

    def write(self, out: pd.DataFrame) -> None:
        import numpy as np
        import pyarrow as pa
        import pyarrow.parquet as pq

        if not len(out):  # all history before `--since`: its text columns have no type yet
            return
        days, at = np.unique(out["date"].to_numpy(dtype=str), return_inverse=True)
        table = pa.Table.from_pandas(
            out.drop(columns="date"), schema=self.schema, preserve_index=False
        )
        self.schema = table.schema
        for i, day in enumerate(days):
            writer = self.writers.get(day)
            if writer is None:
                folder = self.folder / f"date={day}"
                folder.mkdir(parents=True, exist_ok=True)
                writer = self.writers[day] = pq.ParquetWriter(folder / f".{self.name}", self.schema)
            writer.write_table(table.take(np.flatnonzero(at == i)))

    def __enter__(self) -> DayParts:
        return self

    def __exit__(self, kind: object, *_: object) -> None:
        for day, writer in self.writers.items():
            writer.close()
            scratch = self.folder / f"date={day}" / f".{self.name}"
            if kind is None:
                scratch.replace(scratch.with_name(self.name))
            else:
                scratch.unlink(missing_ok=True)


def input_files(path: Path) -> list[Path]:
    """A CSV or parquet file, or a folder of them (one format), in name order."""
    if not path.exists():
        raise ShipyardError(f"{path}: input not found")
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    files = [p for p in files if not p.name.startswith((".", "_"))]
    kinds = {SUFFIXES.get(p.suffix.lower()) for p in files}
    if not files or None in kinds or len(kinds) != 1:
        odd = next((p for p in files if p.suffix.lower() not in SUFFIXES), path)
        raise ShipyardError(f"{odd}: input must be CSV or parquet files of one kind")
    return files


def dvc_hash(path: Path) -> str | None:
    """The md5 DVC records for the input, when a `.dvc` file beside it or above it tracks it."""
    here = path.resolve()
    for folder in [here, *here.parents][:-1]:  # not the file system's root: it has no name
        dvc_file = folder.with_name(folder.name + ".dvc")
        if dvc_file.exists():
            for out in yaml.safe_load(dvc_file.read_text()).get("outs", []):
                if "md5" in out:
                    return f"md5:{out['md5']} ({dvc_file.name})"
    return None


def start(job: Job, say: Any = progress) -> int:
    """Prepare the partial folder; the number of chunks already done (to resume after)."""
    if job.output.exists() and not job.overwrite:
        raise ShipyardError(f"{job.output}: output exists; remove it or give --overwrite")
    journal = job.partial / JOURNAL
    if journal.exists():
        done = json.loads(journal.read_text())
        if done.get("fingerprint") == job.fingerprint():
            say("score", f"resuming after chunk {done['chunks']} of a killed run")
            return int(done["chunks"])
        say("score", "a partial run of other input or settings was found; starting over")
    shutil.rmtree(job.partial, ignore_errors=True)
    job.partial.mkdir(parents=True)
    return 0


def journal(job: Job, chunks: int, counts: Counts) -> None:
    """Record `chunks` done, after their parts are in place (a rename: never half written)."""
    state = {
        "fingerprint": job.fingerprint(),
        "chunks": chunks,
        "rows_in": counts.rows_in,
        "rows_scored": counts.rows_scored,
        "rows_rejected": counts.rows_rejected,
        "reasons": dict(counts.reasons),
    }
    scratch = job.partial / f".{JOURNAL}"
    scratch.write_text(json.dumps(state))
    scratch.replace(job.partial / JOURNAL)


def resumed_counts(job: Job) -> Counts:
    path = job.partial / JOURNAL
    if not path.exists():
        return Counts()
    state = json.loads(path.read_text())
    return Counts(
        state["rows_in"],
        state["rows_scored"],
        state["rows_rejected"],
        Counter(state["reasons"]),
    )


def finish(job: Job, counts: Counts, seconds: float, source: Path) -> dict[str, Any]:
    """Write the manifest and make the output visible, whole."""
    parts = sorted(p.relative_to(job.partial).as_posix() for p in job.partial.glob("date=*/*"))
    manifest = {
        "model": {**job.model.lineage, "threshold": job.model.threshold},
        "model_data_hash": job.model.data_hash,
        "input": {"path": str(source), "files": len(job.inputs), "dvc_hash": dvc_hash(source)},
        "engine": job.engine,
        "since": job.since,
        "rows": {
            "in": counts.rows_in,
            "scored": counts.rows_scored,
            "rejected": counts.rows_rejected,
            "history_only": counts.rows_in - counts.rows_scored - counts.rows_rejected,
        },
        "rejected_by_reason": dict(counts.reasons.most_common()),
        "seconds": round(seconds, 3),
        "rows_per_second": round(counts.rows_scored / seconds, 1) if seconds > 0 else None,
        "partitions": sorted({p.split("/", 1)[0] for p in parts}),
        "parts": len(parts),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    write_json(job.partial / MANIFEST, manifest)
    (job.partial / JOURNAL).unlink(missing_ok=True)
    if job.output.exists():  # --overwrite: the old output goes only now that the new is whole
        old = job.output.with_name(f".{job.output.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        job.output.rename(old)
        job.partial.rename(job.output)
        shutil.rmtree(old)
    else:
        job.partial.rename(job.output)
    return manifest


def strict_failure(rejects: Any, source: str) -> ShipyardError:
    """The first rejected row, as `validate` would name it."""
    first = rejects.iloc[0]
    column, rule, detail = ([*str(first["reason"]).split(": ", 2), "", ""])[:3]
    return ShipyardError(f"{source}: column '{column}': rule '{rule}': {detail} (--strict)")


def malformed_row(source: str, fields: int, header: int, text: str) -> ShipyardError:
    """A CSV row whose field count is not the header's: the file is broken, not a value, so
    the run stops (both engines alike) instead of guessing which field went missing."""
    shown = text.strip().replace("\n", "\\n")
    shown = shown if len(shown) <= 200 else f"{shown[:200]}..."
    return ShipyardError(
        f"{source}: rule 'csv': a row of {fields} fields where the header has {header}: {shown}"
    )
