"""The two stores an MLflow server stands on, its database and its bucket, checked before
the server starts (`shipyard stack check`).

A server on a bad store starts anyway and fails each request later: a missing bucket or a
refused key only shows when the first model is logged, as an HTTP 500 with no reason behind
the artifact proxy. Each check here names the endpoint and what is wrong in one line. It
runs where the server runs, with the server's own settings (`MLFLOW_BACKEND_STORE_URI`,
`MLFLOW_ARTIFACTS_DESTINATION`, `MLFLOW_S3_ENDPOINT_URL` and the AWS credentials), because a
client behind the proxy never sees S3.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from shipyard.errors import ShipyardError
from shipyard.locks import CONNECT_TIMEOUT, where


@dataclass(frozen=True)
class Schema:
    current: str | None  # None: a new, empty database, which `mlflow server` initialises
    head: str  # the revision this MLflow writes


def _first_line(err: BaseException) -> str:
    text = str(getattr(err, "orig", None) or err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _engine_uri(uri: str) -> str:
    # SQLAlchemy's plain `postgresql://` now means psycopg 3; the lock pins psycopg2.
    return uri.replace("postgresql://", "postgresql+psycopg2://", 1)


def _migrations() -> Path:
    import mlflow.store

    return Path(mlflow.store.__file__).parent / "db_migrations"


def database_schema(uri: str) -> Schema:
    """The database's MLflow schema revision next to this MLflow's; one line when the
    database cannot be reached or its schema is not the one this MLflow writes."""
    import mlflow
    import sqlalchemy
    from alembic.script import ScriptDirectory

    name = where(uri)
    script = ScriptDirectory(str(_migrations()))
    head = script.get_current_head()
    if head is None:
        raise ShipyardError(f"MLflow {mlflow.__version__}: no schema migrations found")
    timeout = {"connect_timeout": CONNECT_TIMEOUT} if uri.startswith("postgresql") else {}
    engine = sqlalchemy.create_engine(_engine_uri(uri), connect_args=timeout)
    try:
        with engine.connect() as conn:
            present = sqlalchemy.inspect(conn).has_table("alembic_version")
            current = (
                conn.execute(sqlalchemy.text("SELECT version_num FROM alembic_version")).scalar()
                if present
                else None
            )
    except sqlalchemy.exc.SQLAlchemyError as err:
        raise ShipyardError(f"database {name}: {_first_line(err)}") from None
    finally:
        engine.dispose()
    if current is None or current == head:
        return Schema(current=current, head=head)
    try:
        known = script.get_revision(current) is not None
    except Exception:  # alembic raises its own kinds for an id it cannot parse or resolve
        known = False
    if known:
        raise ShipyardError(
            f"database {name}: schema {current} is older than MLflow {mlflow.__version__}'s "
            f"{head}; back it up, then run `mlflow db upgrade <uri>`"
        )
    raise ShipyardError(
        f"database {name}: schema {current} is unknown to MLflow {mlflow.__version__} "
        f"(a newer MLflow wrote it); upgrade this MLflow"
    )


def check_bucket(
    destination: str, endpoint: str | None, keys: tuple[str, str] | None = None
) -> str:
    """Read and write access to an `s3://bucket/prefix` artifact destination, with `keys`
    (access key id, secret) or else the credentials boto3 finds (environment, profile,
    instance role), as the server would."""
    import boto3
    import botocore.exceptions as boto_errors
    from botocore.config import Config

    parts = urlsplit(destination)
    if parts.scheme != "s3" or not parts.netloc:
        raise ShipyardError(f"artifacts destination {destination!r}: not an s3://bucket/… URI")
    bucket, prefix = parts.netloc, parts.path.strip("/")
    at = endpoint or "AWS S3"
    s3 = boto3.client(
        "s3",
        endpoint_url=endpoint or None,
        aws_access_key_id=keys[0] if keys else None,
        aws_secret_access_key=keys[1] if keys else None,
        config=Config(connect_timeout=CONNECT_TIMEOUT, retries={"max_attempts": 1}),
    )
    probe = "/".join(p for p in (prefix, f".shipyard-check-{secrets.token_hex(4)}") if p)
    try:
        s3.put_object(Bucket=bucket, Key=probe, Body=b"")
        s3.get_object(Bucket=bucket, Key=probe)["Body"].read()
        s3.delete_object(Bucket=bucket, Key=probe)
    except boto_errors.NoCredentialsError:
        raise ShipyardError(
            f"S3 endpoint {at}: no credentials (set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)"
        ) from None
    except boto_errors.EndpointConnectionError:
        raise ShipyardError(f"S3 endpoint {at}: unreachable") from None
    except boto_errors.ClientError as err:
        error = err.response.get("Error", {})
        code, message = error.get("Code", "?"), error.get("Message", "")
        if code in ("NoSuchBucket", "404"):
            raise ShipyardError(f"S3 endpoint {at}: bucket '{bucket}' does not exist") from None
        raise ShipyardError(f"S3 endpoint {at}: bucket '{bucket}': {code}: {message}") from None
    except boto_errors.BotoCoreError as err:
        raise ShipyardError(f"S3 endpoint {at}: {_first_line(err)}") from None
    return f"bucket {bucket} at {at}: read and write ok"


def check(
    backend_store_uri: str,
    artifacts_destination: str | None,
    s3_endpoint: str | None,
    keys: tuple[str, str] | None = None,
) -> list[str]:
    """Both stores, database first; one line each when they pass, the first failure raised."""
    schema = database_schema(backend_store_uri)
    state = f"schema {schema.current}, current" if schema.current else "empty, new schema"
    lines = [f"database {where(backend_store_uri)}: {state}"]
    if artifacts_destination and artifacts_destination.startswith("s3://"):
        lines.append(check_bucket(artifacts_destination, s3_endpoint, keys))
    elif artifacts_destination:
        lines.append(f"artifacts destination {artifacts_destination}: not S3, not checked")
    return lines
