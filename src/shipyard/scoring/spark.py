"""The Spark engine: the same row functions (`scoring.rows`) as pandas UDFs, for tables that
outgrow one machine.

- The contract runs per partition on Arrow batches (`mapInArrow`), its numbers and times
  parsed by Arrow as in the embedded engine (`rows.arrow_typed`).
- History features need an entity's rows together: the rows are partitioned by customer
  for the spending windows and by terminal for the risk windows, each computed by
  `history_features` on a whole partition with the other windows switched off, then joined
  back on a row number. The
  row number follows the input order, so ties in time are broken as featurize breaks them.
- Scoring runs per partition with the model loaded once per Python worker, from the logged
  model folder shipped with `addFile`, through skops and the allow-list (never pickle; MLflow's
  `spark_udf` would load the flavour without our allow-list).
- One Spark job, written by its Python workers: each scoring task writes its rows itself, a
  part file per day (`batch.DayParts`, as embedded's chunks), and returns only its count.
  The rows the contract or the served ranges refuse, and each contract batch's row count, go
  to side files (`_side`), one per task and batch, so a retried task rewrites its own files;
  the driver reads them one at a time into `_rejects/`.
  Sending the rows back to the JVM cost a sort of every row by day for Spark's partitioned
  write, and the rejects' queries scored every row a second time (the write does not fill a
  persisted frame's cache, and filling it first cost as much).

Times cross the JVM as epoch nanoseconds (long), never as Spark timestamps, so the session's
time zone cannot shift a row's calendar features.
"""

from __future__ import annotations

import csv
import os
import re
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd

from shipyard.artifacts import progress
from shipyard.config import DataSection, FeaturizeSection, Params
from shipyard.history import feature_names, history_features
from shipyard.schema import check_rows
from shipyard.scoring import batch, rows
from shipyard.scoring.model import ScoringModel

MASTER_ENV = "SHIPYARD_SPARK_MASTER"
ROW = "_row"
SIDE = "_side"  # the Python workers' refusals and row counts, under the partial output
ROWS_IN = b"shipyard.rows_in"  # a contract side file's metadata: the rows its batch read
_MODELS: dict[str, Any] = {}  # per Python worker: model folder -> loaded pipeline


def _sql_conf(master: str | None) -> dict[str, str]:
    """Settings of ours that are per SQL session, so a borrowed context takes them too."""
    conf = {
        # Arrow batches of 10,000 rows (the default) paid each UDF's fixed cost (the
        # contract's checks, the model call) 1,000 times per 10M rows and stage.
        "spark.sql.execution.arrow.maxRecordsPerBatch": "50000",
        "spark.sql.session.timeZone": "UTC",
    }
    if (master or "local").startswith("local"):
        # Spark's 200 shuffle partitions are sized for a cluster: on one machine each is a
        # Python task of its own, and they cost more than the rows in them.
        conf["spark.sql.shuffle.partitions"] = str(2 * (os.cpu_count() or 2))
    return conf


def session(master: str | None) -> Any:
    from pyspark.sql import SparkSession

    builder = SparkSession.builder.appName("shipyard-score").config("spark.ui.enabled", "false")
    chosen = master or os.environ.get(MASTER_ENV)
    if chosen:  # else spark-submit's, or local[*]
        builder = builder.master(chosen)
    elif not os.environ.get("SPARK_HOME"):
        chosen = "local[*]"
        builder = builder.master(chosen)
    if chosen and chosen.startswith("local"):
        # Without PYSPARK_PYTHON, the context starts its Python workers as `python3` from
        # PATH: from a shell where this virtualenv is not activated, an interpreter without
        # pyarrow or shipyard. (The `spark.pyspark.python` setting is read by spark-submit.)
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    for key, value in _sql_conf(chosen).items():  # spark-submit's unknown master: as local
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    return spark


def borrowed() -> Any | None:
    """The caller's running context (a notebook's, a job's, a test's) in a SQL session of our
    own, or None. Stopping a session stops its context, which would end the caller's work,
    and their session's settings (its time zone) are not ours to use or to change."""
    from pyspark.sql import SparkSession

    theirs = SparkSession.getActiveSession()
    if theirs is None:
        return None
    ours = theirs.newSession()
    for key, value in _sql_conf(theirs.sparkContext.master).items():
        ours.conf.set(key, value)
    return ours


def _spark_type(kind: str) -> str:
    return {"datetime": "long", "string": "string", "bool": "boolean"}.get(kind, "double")


def _arrow_schema(data: DataSection) -> Any:
    """The contract's output: the typed columns as they cross the JVM, and the row number."""
    import pyarrow as pa

    kinds = {"long": pa.int64(), "string": pa.string(), "boolean": pa.bool_()}
    fields = [(n, kinds.get(_spark_type(s.type), pa.float64())) for n, s in data.columns.items()]
    return pa.schema([*fields, (ROW, pa.int64())])


def _side_file(folder: str, kind: str, batch_index: int, table: Any) -> None:
    """One batch's side file, whole or not at all. Named by the task's partition and the
    batch, so a retried task replaces its own files and never adds a second copy."""
    from pyspark import TaskContext

    task = TaskContext.get()
    partition = task.partitionId() if task is not None else 0
    attempt = task.attemptNumber() if task is not None else 0
    name = f"{kind}-{partition:06d}-{batch_index:06d}.parquet"
    # Its scratch name carries the attempt: two attempts in flight never share one.
    batch.write_part(table, Path(folder), name, scratch=f".{name}.{attempt}")


def _wire(frame: pd.DataFrame, data: DataSection) -> pd.DataFrame:
    out = frame.copy()
    for name, spec in data.columns.items():
        if spec.type == "datetime":
            out[name] = out[name].astype("datetime64[ns]").astype("int64")
        elif spec.type in ("int", "float"):
            out[name] = out[name].astype("float64")
    return out


def _unwire(frame: pd.DataFrame, data: DataSection) -> pd.DataFrame:
    out = frame.copy()
    for name, spec in data.columns.items():
        if spec.type == "datetime":
            out[name] = pd.to_datetime(out[name].astype("int64"))
        elif spec.type == "int" and name != data.target:
            out[name] = out[name].astype("int64")
    return out


def _only(cfg: FeaturizeSection, part: str) -> FeaturizeSection:
    """`cfg` with one kind of feature on: `calendar` (row by row), `spending` (per
    customer) or `risk` (per terminal)."""
    keep: dict[str, Any] = {"calendar": False, "spending": None, "risk": None}
    keep[part] = getattr(cfg, part)
    return cfg.model_copy(update=keep)


def run(
    job: batch.Job, params: Params, model_folder: Path, source: Path, master: str | None
) -> dict[str, Any]:
    from pyspark.sql import functions as F
    from pyspark.sql.pandas.types import from_arrow_schema

    data, cfg = params.data, params.featurize
    model: ScoringModel = job.model
    batch.start(job)  # refuses an existing output
    # Not resumed: Spark retries lost tasks within a run; a killed run starts over.
    # Absolute, as every path handed to Spark: it and its workers resolve a path from the
    # JVM's folder, which is not this process's when the context is borrowed.
    partial = job.partial.absolute()
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    began = time.monotonic()
    lent = borrowed()  # `master` chooses only for a session of ours
    spark = lent if lent is not None else session(master)
    try:
        spark.sparkContext.addFile(str(model_folder), recursive=True)
        paths = [str(p.absolute()) for p in job.inputs]
        if job.inputs[0].suffix.lower() == ".csv":
            # Every value as text, and RFC 4180 as embedded's Arrow reader takes it: a quote
            # inside a quoted value is doubled (Spark's default escape is a backslash, which
            # kept the quotes in the value), and a quoted value may hold a line break (Spark's
            # default split the record in two). Each CSV file is then read by one task.
            raw = spark.read.csv(paths, header=True, escape='"', multiLine=True, mode="FAILFAST")
        else:
            raw = spark.read.parquet(*paths)
        raw = raw.select([F.col(c).cast("string").alias(c) for c in raw.columns])
        given = list(raw.columns)  # the rejects' columns, as embedded writes them
        raw = raw.withColumn(ROW, F.monotonically_increasing_id())
        source_name = str(source)

        side = str(partial / SIDE)
        (partial / SIDE).mkdir()
        arrow_schema = _arrow_schema(data)

        def contract(batches: Any) -> Any:
            # Arrow batches, not pandas frames: numbers and times are parsed by Arrow as the
            # embedded engine parses them, where pandas took ~1 us a value, and no Python
            # string is made of a value that parses.
            import pyarrow as pa

            for index, piece in enumerate(batches):  # not `batch`: the module's name
                text = pa.Table.from_batches([piece])
                values = rows.arrow_typed(text.drop_columns([ROW]), data).to_pandas()
                typed, reason = check_rows(values, data, source_name)
                bad = reason.notna().to_numpy()
                refused = text.filter(pa.array(bad)).to_pandas()
                refused[rows.REASON] = reason[bad].astype("string").to_numpy()
                refused["source"] = source_name
                table = pa.Table.from_pandas(refused, preserve_index=False)
                meta = {**(table.schema.metadata or {}), ROWS_IN: str(len(bad)).encode()}
                _side_file(side, "contract", index, table.replace_schema_metadata(meta))
                out = _wire(typed.loc[~bad], data)
                out[ROW] = text.column(ROW).to_numpy()[~bad]
                table = pa.Table.from_pandas(out, preserve_index=False)
                yield from table.select(arrow_schema.names).cast(arrow_schema).to_batches()

        good = raw.mapInArrow(contract, from_arrow_schema(arrow_schema)).persist()
        entity_frames = [good.select(ROW)]
        for part in ("spending", "risk"):
            section = getattr(cfg, part)
            if section is None:
                continue
            sub = _only(cfg, part)
            names = feature_names(sub)
            schema = f"`{ROW}` long, " + ", ".join(f"`{n}` double" for n in names)

            per_entity = _windows(sub, data)
            whole = good.repartition(section.entity)  # an entity's rows in one partition
            entity_frames.append(whole.mapInPandas(per_entity, schema))
        joined = good
        for frame in entity_frames[1:]:
            joined = joined.join(frame, on=ROW, how="inner")
        feature_cols = [c for c in joined.columns if c not in data.columns and c != ROW]
        folder_name = model_folder.name

        def score(frames: Any) -> Any:
            import pyarrow as pa
            from pyspark import SparkFiles, TaskContext

            from shipyard.models import storage

            root = SparkFiles.get(folder_name)
            if root not in _MODELS:
                _MODELS.clear()  # a long-lived context's earlier runs' models
                _MODELS[root] = storage.load_mlflow_model(Path(root))
            estimator = _MODELS[root]
            task = TaskContext.get()
            name = f"part-t{task.partitionId() if task is not None else 0:05d}.parquet"
            written = 0
            with batch.DayParts(partial, name) as parts:
                for index, frame in enumerate(frames):
                    typed = _unwire(frame.drop(columns=feature_cols), data)
                    out, refused = _score_precomputed(
                        estimator, typed, frame[feature_cols], model, data, cfg
                    )
                    if len(refused):
                        table = pa.Table.from_pandas(refused, preserve_index=False)
                        _side_file(side, "range", index, table)
                    out = job.kept(out)
                    parts.write(out)
                    written += len(out)
            yield pd.DataFrame({"rows": [written]})

        try:
            done = joined.mapInPandas(score, "rows long").collect()
        except Exception as err:
            # FAILFAST: a row whose field count is not the header's stops the job, as it stops
            # embedded. Spark's default (PERMISSIVE) dropped extra fields and scored the row.
            record = re.search(r"Malformed CSV record: (.*?) SQLSTATE", str(err), re.S)
            if record is None:
                raise
            fields = len(next(csv.reader([record.group(1)])))
            raise batch.malformed_row(source_name, fields, len(given), record.group(1)) from None
    finally:
        if lent is None:
            spark.stop()
    counts, first = _side_rejects(partial, [*given, rows.REASON, "source"])
    if job.strict and first is not None:
        raise batch.strict_failure(first, source_name)
    _settle(partial)
    counts.rows_scored = sum(int(r["rows"]) for r in done)
    progress(
        "score",
        f"spark: {counts.rows_scored:,} rows scored, {counts.rows_rejected:,} rejected",
    )
    return batch.finish(job, counts, time.monotonic() - began, source)


def _side_rejects(partial: Path, columns: list[str]) -> tuple[batch.Counts, pd.DataFrame | None]:
    """Counts from the workers' side files, and their refused rows into `_rejects/`, a part
    per side file in the input's columns and embedded's types; the first refused row in input
    order, for `--strict`. One side file in memory at a time, so a file of nothing but bad
    rows costs the driver no more than a good one."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    counts, first = batch.Counts(), None
    folder = partial / SIDE
    for index, path in enumerate(sorted(folder.glob("*.parquet"))):
        table = pq.read_table(path)
        if path.name.startswith("contract-"):
            counts.rows_in += int((table.schema.metadata or {})[ROWS_IN])
        if not table.num_rows:
            continue
        refused = table.to_pandas().sort_values(ROW, kind="stable")
        if first is None or refused[ROW].iloc[0] < first[ROW].iloc[0]:
            first = refused.head(1)
        counts.add(0, 0, refused[rows.REASON].tolist())
        # The range side's rows carry the contract's columns only: other input columns, none.
        out = refused.reindex(columns=columns).reset_index(drop=True)
        text = [c for c in columns if c != "source"]
        out[text] = out[text].astype("string")  # embedded's rejects' types, to the letter
        table = pa.Table.from_pandas(out, preserve_index=False)
        batch.write_part(table, partial / batch.REJECTS, f"part-{index:05d}.parquet")
    shutil.rmtree(folder)
    return counts, first


def _windows(sub: FeaturizeSection, data: DataSection) -> Any:
    """A partition holding whole entities -> their window features, by `history_features`
    on the partition at once (per entity, a Python call each cost more than the rows)."""

    def per_partition(frames: Any) -> Any:
        parts = list(frames)  # Arrow batches split an entity's rows: join them first
        if not parts:
            return
        frame = _unwire(pd.concat(parts, ignore_index=True).sort_values(ROW), data)
        frame = frame.reset_index(drop=True)
        feats = history_features(frame, sub, data.timestamp, data.target)
        feats[ROW] = frame[ROW].to_numpy()
        yield feats

    return per_partition


def _score_precomputed(
    estimator: Any,
    typed: pd.DataFrame,
    feats: pd.DataFrame,
    model: ScoringModel,
    data: DataSection,
    cfg: FeaturizeSection,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """`rows.scored` for rows whose entity windows Spark computed already; the calendar
    features, row by row, are computed here. The refused rows are `rows.scored`'s rejects
    with their row number, to be put back in input order."""
    calendar = history_features(typed, _only(cfg, "calendar"), data.timestamp, data.target)
    history = pd.concat([calendar, feats.set_axis(typed.index)], axis=1)
    out, rejects = rows.scored(estimator, typed, history, model, data)
    rejects[ROW] = rejects[ROW].astype("int64")  # carried as text with the row's other values
    return out, rejects


def _settle(partial: Path) -> None:
    """No scratch part of a task attempt that died left beside the whole ones."""
    for scratch in partial.glob("date=*/.part-*"):
        scratch.unlink()
