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

Times cross the JVM as epoch nanoseconds (long), never as Spark timestamps, so the session's
time zone cannot shift a row's calendar features.
"""

from __future__ import annotations

import os
import shutil
import time
from collections import Counter
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
_RAW = "_raw_"  # prefix of a rejected row's values as text, carried beside its typed ones
_MODELS: dict[str, Any] = {}  # per Python worker: model folder -> loaded pipeline


def session(master: str | None) -> Any:
    from pyspark.sql import SparkSession

    builder = SparkSession.builder.appName("shipyard-score").config("spark.ui.enabled", "false")
    chosen = master or os.environ.get(MASTER_ENV)
    if chosen:  # else spark-submit's, or local[*]
        builder = builder.master(chosen)
    elif not os.environ.get("SPARK_HOME"):
        builder = builder.master("local[*]")
    if (chosen or "local").startswith("local"):
        # Spark's 200 shuffle partitions are sized for a cluster: on one machine each is a
        # Python task of its own, and they cost more than the rows in them.
        builder = builder.config("spark.sql.shuffle.partitions", str(2 * (os.cpu_count() or 2)))
    # Arrow batches of 10,000 rows (the default) paid each UDF's fixed cost (the contract's
    # checks, the model call) 1,000 times per 10M rows and stage.
    builder = builder.config("spark.sql.execution.arrow.maxRecordsPerBatch", "50000")
    spark = builder.config("spark.sql.session.timeZone", "UTC").getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    return spark


def _spark_type(kind: str) -> str:
    return {"datetime": "long", "string": "string", "bool": "boolean"}.get(kind, "double")


def _arrow_schema(data: DataSection, raw_cols: list[str]) -> Any:
    """The contract's output: the typed columns as they cross the JVM, the row number, the
    reason and the raw text of each input column (kept for rejected rows only)."""
    import pyarrow as pa

    kinds = {"long": pa.int64(), "string": pa.string(), "boolean": pa.bool_()}
    fields = [(n, kinds.get(_spark_type(s.type), pa.float64())) for n, s in data.columns.items()]
    fields += [(ROW, pa.int64()), (rows.REASON, pa.string())]
    fields += [(f"{_RAW}{c}", pa.string()) for c in raw_cols]
    return pa.schema(fields)


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
    shutil.rmtree(job.partial, ignore_errors=True)
    job.partial.mkdir(parents=True)
    began = time.monotonic()
    spark = session(master)
    try:
        spark.sparkContext.addFile(str(model_folder), recursive=True)
        paths = [str(p) for p in job.inputs]
        if job.inputs[0].suffix.lower() == ".csv":
            raw = spark.read.option("header", True).csv(paths)  # every value as text
        else:
            raw = spark.read.parquet(*paths)
        raw = raw.select([F.col(c).cast("string").alias(c) for c in raw.columns])
        raw = raw.withColumn(ROW, F.monotonically_increasing_id())
        rows_in = raw.count()
        raw_cols = [c for c in raw.columns if c != ROW]
        source_name = str(source)

        arrow_schema = _arrow_schema(data, raw_cols)

        def contract(batches: Any) -> Any:
            # Arrow batches, not pandas frames: numbers and times are parsed by Arrow as the
            # embedded engine parses them, where pandas took ~1 us a value, and no Python
            # string is made of a value that parses.
            import pyarrow as pa
            import pyarrow.compute as pc

            for batch in batches:
                text = pa.Table.from_batches([batch])
                values = rows.arrow_typed(text.drop_columns([ROW]), data).to_pandas()
                typed, reason = check_rows(values, data, source_name)
                out = _wire(typed, data)
                out[ROW] = text.column(ROW).to_numpy()
                out[rows.REASON] = reason
                table = pa.Table.from_pandas(out, preserve_index=False)
                bad = pa.array(reason.notna().to_numpy())
                for c in raw_cols:
                    kept = pc.if_else(bad, text.column(c), pa.scalar(None, pa.string()))
                    table = table.append_column(f"{_RAW}{c}", kept)
                yield from table.cast(arrow_schema).to_batches()

        checked = raw.mapInArrow(contract, from_arrow_schema(arrow_schema)).persist()
        good = checked.filter(F.col(rows.REASON).isNull()).select(*data.columns, ROW)
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
        out_schema = (
            "request_id string, timestamp string, model_name string, model_version string, "
            "model_uri string, score double, decision long, input_hash long, date string, "
            + ", ".join(
                f"`{f}` {'string' if f in data.features.categorical else 'double'}"
                for f in model.fields
            )
            + f", `{rows.REASON}` string, "
            # A refused row's declared values, as text: the rejects' columns, as embedded's.
            + ", ".join(f"`{_RAW}{c}` string" for c in data.columns)
        )
        folder_name = model_folder.name

        def score(frames: Any) -> Any:
            from pyspark import SparkFiles

            from shipyard.models import storage

            root = SparkFiles.get(folder_name)
            if root not in _MODELS:
                _MODELS[root] = storage.load_mlflow_model(Path(root))
            estimator = _MODELS[root]
            for frame in frames:
                typed = _unwire(frame.drop(columns=[*feature_cols, ROW]), data)
                out, refused = _score_precomputed(
                    estimator, typed, frame[feature_cols], model, data, cfg
                )
                yield pd.concat([out, refused], ignore_index=True)

        scored = joined.mapInPandas(score, out_schema).persist()
        good_out = scored.filter(F.col(rows.REASON).isNull()).drop(
            rows.REASON, *[f"{_RAW}{c}" for c in data.columns]
        )
        if job.since is not None:
            good_out = good_out.filter(F.col("timestamp") >= job.since)
        good_out.write.partitionBy("date").parquet(str(job.partial / "_spark_out"))
        contract_rejects = checked.filter(F.col(rows.REASON).isNotNull()).select(
            *[F.col(f"{_RAW}{c}").alias(c) for c in raw_cols],
            rows.REASON,
            F.lit(source_name).alias("source"),
        )
        range_rejects = scored.filter(F.col(rows.REASON).isNotNull()).select(
            *[F.col(f"{_RAW}{c}").alias(c) for c in data.columns],
            rows.REASON,
            F.lit(rows.RANGE_SOURCE).alias("source"),
        )
        reasons = Counter(
            {
                r[rows.REASON]: r["count"]
                for r in contract_rejects.select(rows.REASON)
                .unionByName(range_rejects.select(rows.REASON))
                .groupBy(rows.REASON)
                .count()
                .collect()
            }
        )
        if job.strict and reasons:
            first = contract_rejects.unionByName(range_rejects, allowMissingColumns=True)
            raise batch.strict_failure(first.limit(1).toPandas(), source_name)
        if reasons:
            contract_rejects.unionByName(range_rejects, allowMissingColumns=True).coalesce(
                1
            ).write.parquet(str(job.partial / "_spark_rejects"))
        scored_rows = good_out.count()
    finally:
        spark.stop()
    _settle(job.partial)
    counts = batch.Counts(rows_in, scored_rows, reasons.total(), reasons)
    progress("score", f"spark: {scored_rows:,} rows scored, {reasons.total():,} rejected")
    return batch.finish(job, counts, time.monotonic() - began, source)


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
    features, row by row, are computed here. Refusals take the output's columns, so both
    can leave the UDF as one frame."""
    calendar = history_features(typed, _only(cfg, "calendar"), data.timestamp, data.target)
    history = pd.concat([calendar, feats.set_axis(typed.index)], axis=1)
    out, rejects = rows.scored(estimator, typed, history, model, data)
    out[rows.REASON] = None
    refused = pd.DataFrame({"request_id": rejects[data.id].reset_index(drop=True)})
    refused[rows.REASON] = rejects[rows.REASON].to_numpy()
    for name in data.columns:
        out[f"{_RAW}{name}"] = None
        refused[f"{_RAW}{name}"] = [None if pd.isna(v) else v for v in rejects[name].tolist()]
    # Integers stay integers: a NaN would make the column float and round the 64-bit hash.
    for name in ("decision", "input_hash"):
        refused[name] = 0
    return out, refused.reindex(columns=out.columns)


def _settle(partial: Path) -> None:
    """Spark's files into the embedded layout: `date=D/part-*.parquet`, `_rejects/`."""
    written = partial / "_spark_out"
    for day in sorted(written.glob("date=*")):
        target = partial / day.name
        target.mkdir()
        for i, part in enumerate(sorted(day.glob("part-*.parquet"))):
            part.rename(target / f"part-{i:05d}.parquet")
    shutil.rmtree(written)
    rejects = partial / "_spark_rejects"
    if rejects.exists():
        (partial / batch.REJECTS).mkdir()
        for i, part in enumerate(sorted(rejects.glob("part-*.parquet"))):
            part.rename(partial / batch.REJECTS / f"part-{i:05d}.parquet")
        shutil.rmtree(rejects)
