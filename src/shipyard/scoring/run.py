"""One batch run: resolve the version, pick the engine, write the output whole."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from shipyard.artifacts import progress
from shipyard.config import Params
from shipyard.errors import ShipyardError
from shipyard.lineage import VERSION_SECTIONS, params_hash
from shipyard.policy import Policy
from shipyard.scoring import batch, model, rows


def score(
    ref: str,
    source: Path,
    output: Path,
    params: Params,
    policy: Policy,
    *,
    engine: str = "embedded",
    master: str | None = None,
    chunk_rows: int = 250_000,
    strict: bool = False,
    since: str | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    files = batch.input_files(source)
    start = None
    if since is not None:
        import pandas as pd

        try:
            moment = pd.Timestamp(since)
        except ValueError:
            raise ShipyardError(f"--since {since!r}: not an ISO 8601 date or time") from None
        if moment.tzinfo is not None:
            moment = moment.tz_convert("UTC").tz_localize(None)
        start = str(rows.log_times([moment])[0])
    version = model.resolve(ref, params, policy)
    job = batch.Job(
        model=version,
        inputs=files,
        output=output,
        engine=engine,
        chunk_rows=chunk_rows,
        strict=strict,
        params_hash=params_hash(params, VERSION_SECTIONS),
        since=start,
        overwrite=overwrite,
    )
    progress("score", f"{version.name} v{version.version} on {len(files)} file(s), {engine}")
    try:
        if engine == "spark":
            try:
                import pyspark  # noqa: F401
            except ImportError:
                raise ShipyardError(
                    "score: --engine spark needs pyspark (pip install 'shipyard[spark]')"
                ) from None
            from shipyard.scoring import spark

            with tempfile.TemporaryDirectory(prefix="shipyard-score-") as tmp:
                folder = model.download(version, Path(tmp))
                return spark.run(job, params, folder, source, master)
        from shipyard.scoring import embedded

        return embedded.run(job, params, model.load(version), source)
    except ShipyardError:
        # The input or the settings said no: nothing to resume, so nothing is left behind.
        # A kill skips this, and its partial output is resumed by the next run.
        import shutil

        shutil.rmtree(job.partial, ignore_errors=True)
        raise
