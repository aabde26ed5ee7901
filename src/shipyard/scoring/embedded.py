"""The embedded engine: Arrow chunks through one loaded model, memory bounded by the chunk
and the history window, not by the input.

History features need each row's past. Rows are taken in time order, and the rows of the
last `lookback_days` (only the columns windows read) are carried from chunk to chunk as
context: a row's features are then what featurize computes on the whole table. An input
whose chunks go back in time is refused, naming the row, instead of being scored with a
wrong history.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from shipyard.artifacts import progress
from shipyard.config import DataSection, Params
from shipyard.errors import ValidationFailed
from shipyard.history import history_columns
from shipyard.scoring import batch, rows
from shipyard.scoring.model import ScoringModel

# Ints parse as floats, as pandas parses them (Arrow's int parser also takes hex).
_ARROW_TYPES = {"int": "float64", "float": "float64", "datetime": "timestamp[ns]"}


def _typed(table: Any, data: DataSection) -> Any:
    """CSV text cast to the contract's types in Arrow, a column at a time, where every value
    in the chunk parses; any other column stays text for the contract's row checks, which
    name the bad value. Parsing numbers in pandas costs ~1 us a value."""
    import pyarrow.compute as pc

    for name, spec in data.columns.items():
        kind = _ARROW_TYPES.get(spec.type)
        if kind is None or name not in table.column_names:
            continue
        try:
            column = pc.cast(table.column(name), kind)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            continue
        if kind == "float64" and pc.any(pc.is_nan(column)).as_py():
            continue  # text "nan" is a bad value to the contract, not a missing one
        table = table.set_column(table.column_names.index(name), name, column)
    return table


def chunks(files: list[Path], size: int, data: DataSection) -> Iterator[tuple[str, pd.DataFrame]]:
    """(source file, raw rows) of about `size` rows; CSV values arrive as text, so the
    contract decides what parses, as in `validate`."""
    import pyarrow.csv as pcsv
    import pyarrow.parquet as pq

    for path in files:
        if path.suffix.lower() == ".csv":
            header = pcsv.open_csv(path, read_options=pcsv.ReadOptions(block_size=1 << 16))
            names = header.schema.names
            reader: Any = pcsv.open_csv(
                path,
                read_options=pcsv.ReadOptions(block_size=1 << 20),  # 16 MiB: 10x the memory
                convert_options=pcsv.ConvertOptions(
                    column_types={n: pa.string() for n in names},
                    strings_can_be_null=True,
                    null_values=[""],  # as `validate` reads: "nan" or "NA" are values, not gaps
                ),
            )
        else:
            reader = pq.ParquetFile(path).iter_batches(batch_size=size)
        pending: list[Any] = []
        count = 0
        for part in reader:
            pending.append(part)
            count += part.num_rows
            while count >= size:
                table = pa.Table.from_batches(pending)
                yield str(path), _typed(table.slice(0, size), data).to_pandas()
                rest = table.slice(size)
                pending, count = rest.to_batches(), rest.num_rows
        if count:
            yield str(path), _typed(pa.Table.from_batches(pending), data).to_pandas()


def _write(table: Any, folder: Path, name: str) -> None:
    """A whole part file or none: written beside, then renamed."""
    import pyarrow.parquet as pq

    folder.mkdir(parents=True, exist_ok=True)
    scratch = folder / f".{name}"
    pq.write_table(table, scratch)
    scratch.replace(folder / name)


def _write_days(out: pd.DataFrame, folder: Path, name: str) -> None:
    """One part per day in `date=D/`; Arrow slices of one table, no per-day pandas copy."""
    days, at = np.unique(out["date"].to_numpy(dtype=str), return_inverse=True)
    order = np.argsort(at, kind="stable")
    table = pa.Table.from_pandas(out.drop(columns="date"), preserve_index=False).take(order)
    sizes = np.bincount(at, minlength=len(days))
    for day, end, size in zip(days, np.cumsum(sizes), sizes, strict=True):
        _write(table.slice(end - size, size), folder / f"date={day}", name)


@functools.cache
def _libc() -> Any:
    """glibc, for `malloc_trim`; None elsewhere. Looked up once: `find_library` runs a
    subprocess."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    libc = ctypes.CDLL(name) if name else None
    return libc if libc is not None and hasattr(libc, "malloc_trim") else None


def _release() -> None:
    """Hand freed memory back to the system between chunks: Arrow's pool and glibc's heap
    keep what a chunk freed, and peak RSS would then grow with the input, not the chunk."""
    pa.default_memory_pool().release_unused()
    if (libc := _libc()) is not None:
        libc.malloc_trim(0)


def run(job: batch.Job, params: Params, estimator: Any, source: Path) -> dict[str, Any]:
    data, cfg = params.data, params.featurize
    model: ScoringModel = job.model
    done = batch.start(job)
    counts = batch.resumed_counts(job)
    reach = pd.Timedelta(days=rows.lookback_days(cfg))
    carried = history_columns(cfg, data.timestamp, data.target)
    context: pd.DataFrame | None = None
    latest: pd.Timestamp | None = None
    began = time.monotonic()
    scored_now = 0
    for index, (path, raw) in enumerate(chunks(job.inputs, job.chunk_rows, data)):
        checked = rows.check(raw, data, path)
        good = checked.good
        if len(good):
            first = good[data.timestamp].min()
            if latest is not None and first < latest:
                at = int((good[data.timestamp] < latest).to_numpy().argmax())
                raise ValidationFailed(
                    path,
                    data.timestamp,
                    "order",
                    f"chunk {index + 1} goes back in time ({good[data.timestamp].iloc[at]} "
                    f"before {latest}); sort the input by {data.timestamp}",
                )
            latest = good[data.timestamp].max()
        if index >= done:
            if job.strict and len(checked.rejects):
                raise batch.strict_failure(checked.rejects, path)
            out, refused = rows.score(estimator, good, model, data, cfg, past=context)
            if job.strict and len(refused):
                raise batch.strict_failure(refused, path)
            out = job.kept(out)
            name = f"part-{index:05d}.parquet"
            _write_days(out, job.partial, name)
            rejects = pd.concat([checked.rejects, refused], ignore_index=True)
            if len(rejects):
                table = pa.Table.from_pandas(rejects, preserve_index=False)
                _write(table, job.partial / batch.REJECTS, name)
            counts.add(len(raw), len(out), list(rejects[rows.REASON]))
            batch.journal(job, index + 1, counts)
            scored_now += len(out)
            rate = scored_now / max(time.monotonic() - began, 1e-9)
            progress(
                "score",
                f"chunk {index + 1}: {counts.rows_scored:,} rows scored, "
                f"{counts.rows_rejected:,} rejected, {rate:,.0f} rows/s",
            )
        if latest is not None:
            cut = latest - reach
            kept = [] if context is None else [context.loc[context[data.timestamp] > cut]]
            kept.append(good.loc[good[data.timestamp] > cut, carried])
            context = pd.concat(kept, ignore_index=True)
        del raw, checked, good
        _release()
    return batch.finish(job, counts, time.monotonic() - began, source)
