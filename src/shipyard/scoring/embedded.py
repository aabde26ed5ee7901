"""The embedded engine: Arrow chunks through one loaded model, memory bounded by the chunk
and the history window, not by the input.

History features need each row's past. Rows are taken in time order, and the rows of the
last `lookback_days` (only the columns windows read) are carried from chunk to chunk as
context: a row's features are then what featurize computes on the whole table. An input
whose chunks go back in time is refused, naming the row, instead of being scored with a
wrong history.
"""

from __future__ import annotations

import dataclasses
import functools
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from shipyard.artifacts import progress
from shipyard.config import DataSection, Params
from shipyard.errors import ShipyardError, ValidationFailed
from shipyard.history import history_columns
from shipyard.scoring import batch, rows
from shipyard.scoring.model import ScoringModel

SLICE_ROWS = 50_000  # rows scored and written at a time; a chunk's windows are computed once


def chunks(
    files: list[Path], size: int, data: DataSection
) -> Iterator[tuple[str, pd.DataFrame, Any]]:
    """(source file, raw rows, the same rows as read) of about `size` rows; CSV values arrive
    as text, so the contract decides what parses, as in `validate`. The rows as read are an
    Arrow table, for the rejects' values."""
    import pyarrow.parquet as pq

    for path in files:
        if path.suffix.lower() == ".csv":
            reader: Any = _csv(path)
        else:
            reader = pq.ParquetFile(path).iter_batches(batch_size=size)
        pending: list[Any] = []
        count = 0
        for part in reader:
            pending.append(part)
            count += part.num_rows
            while count >= size:
                count -= size
                yield str(path), *_take(pending, size, data)
        if count:
            yield str(path), *_take(pending, count, data)


def _csv(path: Path) -> Iterator[Any]:
    """The file's record batches, every value as text. A row Arrow cannot split into the
    header's fields is the one-line error the Spark engine gives for it."""
    import pyarrow.csv as pcsv

    # A quoted value may hold a line break, as pandas and Spark read it. Without this, Arrow
    # read one inside a block, and failed where a block ended in it.
    parse = pcsv.ParseOptions(newlines_in_values=True)
    try:
        header = pcsv.open_csv(
            path, read_options=pcsv.ReadOptions(block_size=1 << 16), parse_options=parse
        )
        names = header.schema.names
        yield from pcsv.open_csv(
            path,
            read_options=pcsv.ReadOptions(block_size=1 << 20),  # 16 MiB: 10x the memory
            parse_options=parse,
            convert_options=pcsv.ConvertOptions(
                column_types={n: pa.string() for n in names},
                strings_can_be_null=True,
                null_values=[""],  # as `validate` reads: "nan" or "NA" are values, not gaps
            ),
        )
    except pa.ArrowInvalid as err:
        found = re.search(r"Expected (\d+) columns, got (\d+): (.*)", str(err), re.S)
        if found is None:
            raise ShipyardError(f"{path}: rule 'csv': {' '.join(str(err).split())}") from None
        header_fields, fields, text = found.groups()
        raise batch.malformed_row(str(path), int(fields), int(header_fields), text) from None


def _take(pending: list[Any], size: int, data: DataSection) -> tuple[pd.DataFrame, Any]:
    """The first `size` rows of `pending`, typed and as read, leaving the rest in it. A
    function of its own so that no Arrow table of the chunk's text outlives the chunk's
    contract check: a generator's locals live while its consumer works, and held about 60
    MiB through each chunk."""
    table = pa.Table.from_batches(pending)
    pending[:] = table.slice(size).to_batches()
    read = table.slice(0, size)
    return rows.arrow_typed(read, data).to_pandas(), read


def _as_read(checked: rows.Checked, read: Any) -> rows.Checked:
    """The rejects with their values as the input gave them ("10", not the "10.0" the
    contract's number parse made of it), as the Spark engine writes them."""
    if not len(checked.rejects):
        return checked
    given = read.take(pa.array(np.flatnonzero(~checked.accepted))).to_pandas()
    rejects = checked.rejects.copy()
    for name in given.columns:
        rejects[name] = given[name].astype("string").set_axis(rejects.index)
    return dataclasses.replace(checked, rejects=rejects)


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


def _young(window: pd.DataFrame, timestamp: str, cut: pd.Timestamp) -> pd.DataFrame:
    """The rows from the first one after `cut` on, as a slice: no copy, where a copy beside
    the frame it was cut from was the run's peak. Rows out of time order inside a chunk
    may keep a few older ones with them, which no window then counts."""
    young = (window[timestamp] > cut).to_numpy()
    first = int(young.argmax()) if young.any() else len(young)
    kept = window.iloc[first:]
    kept.index = pd.RangeIndex(len(kept))
    return kept


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
    for index, (path, raw, read) in enumerate(chunks(job.inputs, job.chunk_rows, data)):
        checked, rows_in = _as_read(rows.check(raw, data, path), read), len(raw)
        del raw, read  # its rejects are copied out: the windows' sort needs the room
        _release()  # the text, before the windows' sort: held to it, the peak was 20-70 MiB more
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
        # The rows the windows read, in one frame, and no other copy of them while the
        # windows are computed (`context` as well cost about 85 MiB at 10M rows).
        recent = rows.narrow(good[carried], data.target)
        window = recent if context is None else pd.concat([context, recent], ignore_index=True)
        context = None
        if index >= done:
            if job.strict and len(checked.rejects):
                raise batch.strict_failure(checked.rejects, path)
            windows = rows.windows(window, good, data, cfg)
            _release()  # the windows' sort, before the model's own working memory
            name = f"part-{index:05d}.parquet"
            refusals = [checked.rejects]
            written = 0
            with batch.DayParts(job.partial, name) as parts:
                for at in range(0, len(good), SLICE_ROWS):
                    piece = slice(at, at + SLICE_ROWS)
                    out, refused = rows.scored(
                        estimator, good.iloc[piece], windows.iloc[piece], model, data
                    )
                    if job.strict and len(refused):
                        raise batch.strict_failure(refused, path)
                    out = job.kept(out)
                    parts.write(out)
                    written += len(out)
                    refusals.append(refused)
                    del out, refused
            rejects = pd.concat(refusals, ignore_index=True)
            if len(rejects):
                table = pa.Table.from_pandas(rejects, preserve_index=False)
                batch.write_part(table, job.partial / batch.REJECTS, name)
            counts.add(rows_in, written, list(rejects[rows.REASON]))
            batch.journal(job, index + 1, counts)
            scored_now += written
            rate = scored_now / max(time.monotonic() - began, 1e-9)
            progress(
                "score",
                f"chunk {index + 1}: {counts.rows_scored:,} rows scored, "
                f"{counts.rows_rejected:,} rejected, {rate:,.0f} rows/s",
            )
            del windows, rejects, refusals
        if latest is not None:
            context = _young(window, data.timestamp, latest - reach)
        del checked, good, recent, window
        _release()
    return batch.finish(job, counts, time.monotonic() - began, source)
