"""`shipyard score`: a registered version on a whole table, embedded or on Spark."""

from __future__ import annotations

from pathlib import Path

import click

from shipyard.cli.options import params_option, policy_option


@click.command()
@click.argument("model_ref", metavar="MODEL@REF")
@click.option(
    "--input",
    "input_path",
    required=True,
    type=click.Path(path_type=Path),
    help="A CSV or parquet file, or a folder of them, of raw rows as the pipeline trains on.",
)
@click.option(
    "--output",
    "output_path",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder for the partitioned parquet (date=YYYY-MM-DD/), _rejects/, _manifest.json.",
)
@click.option(
    "--engine",
    type=click.Choice(["embedded", "spark"]),
    default="embedded",
    show_default=True,
    help="embedded: Arrow chunks in this process. spark: a Spark session (pip extra `spark`).",
)
@click.option(
    "--master",
    help="Spark master URL [default: $SHIPYARD_SPARK_MASTER, spark-submit's, else local[*]].",
)
@click.option(
    "--chunk-rows",
    default=250_000,
    show_default=True,
    type=click.IntRange(1000),
    help="Embedded: rows per chunk (memory grows with it).",
)
@click.option(
    "--since",
    help="Write only rows at or after this time (ISO 8601); earlier ones are their history "
    "(the windows featurize computes reach back up to 37 days by default).",
)
@click.option("--strict", is_flag=True, help="Fail on the first row that breaks the contract.")
@click.option(
    "--overwrite",
    is_flag=True,
    help="Replace an existing output folder, once the new one is complete.",
)
@params_option
@policy_option
def score(
    model_ref: str,
    input_path: Path,
    output_path: Path,
    engine: str,
    master: str | None,
    chunk_rows: int,
    since: str | None,
    strict: bool,
    overwrite: bool,
    params_path: Path,
    policy_path: Path,
) -> None:
    """Score a table with MODEL@REF (fraud-detector@champion, fraud-detector@3).

    Rows are checked against the data contract (bad ones go to _rejects/ with the reason,
    or fail the run with --strict), get the history features featurize computes, and are
    scored at the version's threshold. The output appears whole or not at all; a killed
    embedded run resumes where it stopped. Prints the manifest.
    """
    import json

    from shipyard import tracking
    from shipyard.config import load_params
    from shipyard.policy import load_policy
    from shipyard.scoring import run

    params = load_params(params_path)
    tracking.configure(params.base)
    manifest = run.score(
        model_ref,
        input_path,
        output_path,
        params,
        load_policy(policy_path),
        engine=engine,
        master=master,
        chunk_rows=chunk_rows,
        strict=strict,
        since=since,
        overwrite=overwrite,
    )
    click.echo(json.dumps(manifest, indent=2))
