"""`shipyard stack check` against real stores: the stack's PostgreSQL and S3 endpoint, and
an S3 endpoint of this module's that checks credentials as AWS or MinIO would (the stack's
does not: moto's credential checks fail on the presigned requests the server makes). Each
fault is one line naming the endpoint and the problem, and exit 1; the honest stores pass."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from shipyard import stack, stores
from shipyard.deploy import processes
from shipyard.deploy.processes import free_port
from shipyard.errors import ShipyardError
from tests.integration.team_stack import team_stack

pytestmark = pytest.mark.stack
__all__ = ["team_stack"]  # fixture
SHIPYARD = str(Path(sys.executable).with_name("shipyard"))


@pytest.fixture(scope="module")
def checked_s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """moto checking every request past its first three against its IAM: those three issue
    a key with S3 rights; the bucket is made with it."""
    import boto3

    folder = tmp_path_factory.mktemp("checked-s3")
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    env = {**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "3"}
    moto = [processes.bin_path("moto_server"), "-H", "127.0.0.1", "-p", str(port)]
    pid = processes.start(moto, folder / "s3.log", env)
    try:
        processes.wait_ready(f"{endpoint}/moto-api/", pid, folder / "s3.log", 60)
        anyone = {"aws_access_key_id": "any", "aws_secret_access_key": "any"}
        iam = boto3.client("iam", endpoint_url=endpoint, region_name=stack.REGION, **anyone)
        iam.create_user(UserName="server")
        key = iam.create_access_key(UserName="server")["AccessKey"]
        allow = {"Effect": "Allow", "Action": "s3:*", "Resource": "*"}
        policy = json.dumps({"Version": "2012-10-17", "Statement": [allow]})
        iam.put_user_policy(UserName="server", PolicyName="s3", PolicyDocument=policy)
        keys = {"AWS_ACCESS_KEY_ID": key["AccessKeyId"]}
        keys["AWS_SECRET_ACCESS_KEY"] = key["SecretAccessKey"]
        boto3.client(
            "s3",
            endpoint_url=endpoint,
            region_name=stack.REGION,
            aws_access_key_id=keys["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=keys["AWS_SECRET_ACCESS_KEY"],
        ).create_bucket(Bucket="team-artifacts")
        yield {
            "MLFLOW_S3_ENDPOINT_URL": endpoint,
            "MLFLOW_ARTIFACTS_DESTINATION": "s3://team-artifacts/mlflow",
            **keys,
        }
    finally:
        processes.stop(pid)


def check_cli(running: stack.Stack, **settings: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MLFLOW_"))}
    env.update(
        {
            "MLFLOW_BACKEND_STORE_URI": running.database_uri,
            "MLFLOW_ARTIFACTS_DESTINATION": running.artifacts_destination,
            "MLFLOW_S3_ENDPOINT_URL": running.s3_endpoint,
            "AWS_ACCESS_KEY_ID": running.access_key,
            "AWS_SECRET_ACCESS_KEY": running.secret_key,
            "AWS_DEFAULT_REGION": stack.REGION,
            **settings,
        }
    )
    return subprocess.run(
        [SHIPYARD, "stack", "check"], env=env, capture_output=True, text=True, timeout=120
    )


def one_error_line(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def test_the_stacks_own_stores_pass(team_stack: stack.Stack) -> None:
    done = check_cli(team_stack)
    assert done.returncode == 0, done.stderr
    out = done.stdout.strip().splitlines()
    assert out[0].startswith(f"database postgresql://127.0.0.1:{team_stack.postgres_port}/mlflow")
    assert "current" in out[0]  # the running server migrated it
    assert out[1] == f"bucket {team_stack.bucket} at {team_stack.s3_endpoint}: read and write ok"


def test_an_s3_endpoint_that_checks_keys_passes_with_the_right_ones(
    team_stack: stack.Stack, checked_s3: dict[str, str]
) -> None:
    done = check_cli(team_stack, **checked_s3)
    assert done.returncode == 0, done.stderr
    endpoint = checked_s3["MLFLOW_S3_ENDPOINT_URL"]
    assert done.stdout.strip().splitlines()[1] == (
        f"bucket team-artifacts at {endpoint}: read and write ok"
    )


@pytest.mark.parametrize(
    ("setting", "value", "expected"),
    [
        ("AWS_ACCESS_KEY_ID", "AKIANOSUCHKEY", "InvalidAccessKeyId"),
        ("AWS_SECRET_ACCESS_KEY", "not-the-secret", "SignatureDoesNotMatch"),
        ("MLFLOW_ARTIFACTS_DESTINATION", "s3://no-such-bucket/mlflow", "does not exist"),
    ],
)
def test_a_bad_bucket_setting_is_one_line_naming_the_endpoint(
    team_stack: stack.Stack, checked_s3: dict[str, str], setting: str, value: str, expected: str
) -> None:
    line = one_error_line(check_cli(team_stack, **{**checked_s3, setting: value}))
    endpoint = checked_s3["MLFLOW_S3_ENDPOINT_URL"]
    assert line.startswith(f"error: S3 endpoint {endpoint}: bucket '"), line
    assert expected in line


def test_an_unreachable_endpoint_or_database_is_named(team_stack: stack.Stack) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    line = one_error_line(check_cli(team_stack, MLFLOW_S3_ENDPOINT_URL=dead))
    assert line == f"error: S3 endpoint {dead}: unreachable"
    port = free_port()
    line = one_error_line(
        check_cli(team_stack, MLFLOW_BACKEND_STORE_URI=f"postgresql://u:pw@127.0.0.1:{port}/db")
    )
    assert line.startswith(f"error: database postgresql://127.0.0.1:{port}/db: "), line
    assert "Connection refused" in line or "connection refused" in line.lower()
    assert "pw" not in line.split(": ", 2)[1]  # the password is never printed
    missing = team_stack.database_uri.rsplit("/", 1)[0] + "/nosuchdb"
    line = one_error_line(check_cli(team_stack, MLFLOW_BACKEND_STORE_URI=missing))
    assert 'database "nosuchdb" does not exist' in line


@pytest.fixture
def scratch_database(team_stack: stack.Stack) -> Iterator[str]:
    """An empty database beside the server's, dropped afterwards."""
    import psycopg2

    name = f"scratch_{uuid.uuid4().hex[:8]}"
    admin = psycopg2.connect(team_stack.database_uri)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f"CREATE DATABASE {name}")
    try:
        yield team_stack.database_uri.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with admin.cursor() as cur:
            cur.execute(f"DROP DATABASE {name}")
        admin.close()


def _stamp(uri: str, revision: str) -> None:
    import psycopg2

    with psycopg2.connect(uri) as conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE IF NOT EXISTS alembic_version (version_num varchar(32))")
        cur.execute("DELETE FROM alembic_version")
        cur.execute("INSERT INTO alembic_version VALUES (%s)", (revision,))


def test_a_schema_older_or_newer_than_this_mlflow_is_named(
    team_stack: stack.Stack, scratch_database: str
) -> None:
    """What `mlflow server` would refuse at start, or worse write on, is named first."""
    import mlflow
    from alembic.script import ScriptDirectory

    empty = stores.database_schema(scratch_database)
    assert empty.current is None  # a new database: the server creates the schema
    script = ScriptDirectory(str(stores._migrations()))
    head = script.get_current_head()
    assert head is not None
    older = script.get_revision(head).down_revision
    assert isinstance(older, str)
    _stamp(scratch_database, older)
    line = one_error_line(check_cli(team_stack, MLFLOW_BACKEND_STORE_URI=scratch_database))
    assert f"schema {older} is older than MLflow {mlflow.__version__}'s {head}" in line
    assert "mlflow db upgrade" in line
    _stamp(scratch_database, "ffffffffffff")
    with pytest.raises(ShipyardError, match=r"unknown to MLflow .*a newer MLflow wrote it"):
        stores.database_schema(scratch_database)
    _stamp(scratch_database, head)
    assert stores.database_schema(scratch_database).current == head


def test_without_settings_or_a_stack_it_says_what_to_give(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_BACKEND_STORE_URI"}
    done = subprocess.run(
        [SHIPYARD, "stack", "check", "--folder", str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert done.stderr.strip() == (
        f"error: stack check: give --backend-store-uri (or MLFLOW_BACKEND_STORE_URI), "
        f"or start a stack in {tmp_path}"
    )
