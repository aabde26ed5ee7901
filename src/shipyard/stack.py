"""The team stack on loopback: PostgreSQL, an S3 endpoint and `mlflow server` on both.

For development and the tests. Against a team's real server nothing here starts: only
`MLFLOW_TRACKING_URI` (and `MLFLOW_TRACKING_TOKEN`, `SHIPYARD_LOCK_URI`) change. The server runs
with `--serve-artifacts`, so clients read and write artifacts through it over HTTP and need
no S3 credentials; only the server talks S3, configured by `MLFLOW_S3_ENDPOINT_URL` and the
AWS variables exactly as against MinIO or AWS. The S3 endpoint here is moto's server, because
no S3 service can be reached from this machine.

PostgreSQL refuses to run as root, so as root the cluster belongs to the `postgres` user, in a
folder of its own under the system temp folder (a test's folder is often closed to it).
"""

from __future__ import annotations

import glob
import json
import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from cryptography.fernet import Fernet

from shipyard.deploy import processes
from shipyard.errors import ShipyardError

STATE = "stack.json"
DATABASE = "mlflow"
# One `mlflow server` worker: it answers requests on a thread pool, so concurrent clients are
# still served at once, and each further worker imports MLflow again (about 3 s of CPU and
# 300 MB here, `benchmarks.stack_start`).
SERVER_WORKERS = 1
ROLE = "shipyard"
REGION = "us-east-1"


@dataclass(frozen=True)
class Stack:
    folder: str
    pgdata: str
    postgres_port: int
    s3_port: int
    s3_pid: int
    mlflow_port: int
    mlflow_pid: int
    bucket: str
    access_key: str
    secret_key: str
    webhook_key: str  # Fernet key the server encrypts webhook secrets with
    server_workers: int = SERVER_WORKERS

    @property
    def database_uri(self) -> str:
        return f"postgresql://{ROLE}@127.0.0.1:{self.postgres_port}/{DATABASE}"

    @property
    def s3_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.s3_port}"

    @property
    def artifacts_destination(self) -> str:
        return f"s3://{self.bucket}/mlflow"

    @property
    def tracking_uri(self) -> str:
        return f"http://127.0.0.1:{self.mlflow_port}"

    def client_env(self) -> dict[str, str]:
        """What a client exports to use the stack: the server, and the lock on its database."""
        return {"MLFLOW_TRACKING_URI": self.tracking_uri, "SHIPYARD_LOCK_URI": self.database_uri}

    def server_env(self) -> dict[str, str]:
        """What `mlflow server` needs to reach S3, as against AWS or MinIO."""
        return {
            **MLFLOW_SERVER_ENV,
            "MLFLOW_S3_ENDPOINT_URL": self.s3_endpoint,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": REGION,
            "MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY": self.webhook_key,
        }


# Every `mlflow server` Shipyard starts (each adds its own webhook key). MLflow 3's job
# execution (GenAI prompt optimisation, trace roll-ups: nothing Shipyard calls) starts a runner
# and seven Huey consumers beside each server, each importing MLflow: measured here, 1.95 GiB
# and 30.6 s of CPU in a server's first 40 s, for nothing.
MLFLOW_SERVER_ENV = {
    "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
    # The webhook receiver runs on this machine: loopback and plain http are allowed.
    "MLFLOW_WEBHOOK_ALLOWED_SCHEMES": "http,https",
    "MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS": "true",
    # A new or changed webhook fires within a second, not after MLflow's 60 s cache.
    "MLFLOW_WEBHOOK_CACHE_TTL": "1",
}


def postgres_bin() -> Path:
    """The folder with `initdb` and `pg_ctl`: Debian keeps them off PATH, in a versioned one."""
    found = [Path(p) for p in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)]
    pg_config = shutil.which("pg_config")
    if pg_config:
        out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=False)
        found.insert(0, Path(out.stdout.strip()))
    for folder in found:
        if (folder / "initdb").exists() and (folder / "pg_ctl").exists():
            return folder
    raise ShipyardError(
        "stack: PostgreSQL server binaries (initdb, pg_ctl) not found; "
        "install Debian's postgresql-15 (`make tools`)"
    )


def _as_owner(cmd: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


def _run(cmd: list[str], what: str) -> None:
    done = subprocess.run(_as_owner(cmd), capture_output=True, text=True, check=False)
    if done.returncode != 0:
        last = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        raise ShipyardError(f"stack: {what} failed: {last[0]}")


def _pgdata(folder: Path) -> Path:
    """The cluster's folder: in `folder`, except as root, where `postgres` owns it and
    `folder` (often a test's, mode 0700) may be closed to that user."""
    if os.geteuid() != 0:
        return folder / "pgdata"
    owner = pwd.getpwnam("postgres")
    home = Path(tempfile.mkdtemp(prefix="shipyard-pg-"))
    os.chown(home, owner.pw_uid, owner.pw_gid)
    return home / "pgdata"


def _start_postgres(pgdata: Path, port: int) -> None:
    bindir = postgres_bin()
    log = pgdata.parent / "postgres.log"
    _run(
        [str(bindir / "initdb"), "-D", str(pgdata), "-U", ROLE, "-A", "trust", "--no-sync"],
        "initdb",
    )
    options = f"-p {port} -c listen_addresses=127.0.0.1 -k {pgdata.parent} -c fsync=on"
    _run(
        [str(bindir / "pg_ctl"), "-D", str(pgdata), "-o", options, "-l", str(log), "-w", "start"],
        f"PostgreSQL on port {port} (log: {log})",
    )
    _run(
        [str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", ROLE, DATABASE],
        "createdb",
    )


def _stop_postgres(pgdata: Path) -> None:
    if (pgdata / "postmaster.pid").exists():
        pg_ctl = str(postgres_bin() / "pg_ctl")
        _run([pg_ctl, "-D", str(pgdata), "-m", "fast", "-w", "stop"], "pg_ctl stop")


def _create_bucket(stack: Stack) -> None:
    import boto3  # the real S3 client, pointed at the endpoint as at MinIO

    s3 = boto3.client(
        "s3",
        endpoint_url=stack.s3_endpoint,
        aws_access_key_id=stack.access_key,
        aws_secret_access_key=stack.secret_key,
        region_name=REGION,
    )
    s3.create_bucket(Bucket=stack.bucket)


def load(folder: Path) -> Stack | None:
    path = folder / STATE
    return Stack(**json.loads(path.read_text())) if path.exists() else None


def up(
    folder: Path,
    say: Callable[[str], None] = print,
    env: dict[str, str] | None = None,
    server_workers: int = SERVER_WORKERS,
) -> Stack:
    """Start the three services, or return the running stack recorded in `folder`. A service
    that fails to start stops the ones already started.

    `env` is added to the S3 endpoint's and the server's environment (the demo marks its
    processes so that none outlives it). `server_workers` is recorded with the stack, so a
    restarted server runs as many.
    """
    if server_workers < 1:
        raise ShipyardError(f"stack: server_workers must be at least 1, got {server_workers}")
    running = load(folder)
    if running is not None and processes.alive(running.mlflow_pid):
        return running
    folder.mkdir(parents=True, exist_ok=True)
    moto = processes.bin_path("moto_server")
    if not Path(moto).exists():
        raise ShipyardError("stack: moto_server not found (the S3 stand-in; `make venv`)")
    ports = [processes.free_port() for _ in range(3)]
    stack = Stack(
        folder=str(folder),
        pgdata="",
        postgres_port=ports[0],
        s3_port=ports[1],
        s3_pid=0,
        mlflow_port=ports[2],
        mlflow_pid=0,
        bucket="shipyard-artifacts",
        access_key="stack-" + secrets.token_hex(8),
        secret_key=secrets.token_hex(20),
        webhook_key=Fernet.generate_key().decode(),
        server_workers=server_workers,
    )
    try:
        say(f"stack: PostgreSQL on 127.0.0.1:{stack.postgres_port}")
        stack = replace(stack, pgdata=str(_pgdata(folder)))
        _save(folder, stack)
        _start_postgres(Path(stack.pgdata), stack.postgres_port)
        say(f"stack: S3 endpoint (moto) on {stack.s3_endpoint}")
        s3_log = folder / "s3.log"
        cmd = [moto, "-H", "127.0.0.1", "-p", str(stack.s3_port)]
        stack = replace(stack, s3_pid=processes.start(cmd, s3_log, {**os.environ, **(env or {})}))
        _save(folder, stack)
        processes.wait_ready(f"{stack.s3_endpoint}/moto-api/", stack.s3_pid, s3_log, 60)
        _create_bucket(stack)
        for line in check(stack):
            say(f"stack: {line}")
        say(f"stack: mlflow server on {stack.tracking_uri}")
        stack = _start_mlflow(folder, stack, env or {})
    except BaseException:
        down(folder)
        raise
    return stack


def check(stack: Stack) -> list[str]:
    """The server's two stores, as `shipyard stack check` checks a team's."""
    from shipyard import stores

    keys = (stack.access_key, stack.secret_key)
    return stores.check(stack.database_uri, stack.artifacts_destination, stack.s3_endpoint, keys)


def _start_mlflow(folder: Path, stack: Stack, extra: dict[str, str] | None = None) -> Stack:
    mlflow_log = folder / "mlflow-server.log"
    env = {**os.environ, **(extra or {}), **stack.server_env()}
    env.pop("MLFLOW_TRACKING_URI", None)
    stack = replace(stack, mlflow_pid=processes.start(_mlflow_cmd(stack), mlflow_log, env))
    _save(folder, stack)
    processes.wait_ready(f"{stack.tracking_uri}/health", stack.mlflow_pid, mlflow_log)
    return stack


def restart_server(folder: Path) -> Stack:
    """Start the stack's `mlflow server` again on its port (after a crash or a kill)."""
    stack = load(folder)
    if stack is None:
        raise ShipyardError(f"stack: none recorded in {folder}; run `shipyard stack up`")
    if processes.alive(stack.mlflow_pid):
        processes.stop(stack.mlflow_pid)
    return _start_mlflow(folder, stack)


def _mlflow_cmd(stack: Stack) -> list[str]:
    return [
        processes.bin_path("mlflow"),
        "server",
        "--backend-store-uri",
        # SQLAlchemy's plain `postgresql://` now means psycopg 3; the lock pins psycopg2.
        stack.database_uri.replace("postgresql://", "postgresql+psycopg2://", 1),
        "--artifacts-destination",
        stack.artifacts_destination,
        "--serve-artifacts",
        "--host",
        "127.0.0.1",
        "--port",
        str(stack.mlflow_port),
        "--workers",
        str(stack.server_workers),
    ]


def _save(folder: Path, stack: Stack) -> None:
    path = folder / STATE
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # holds the S3 keys
    with os.fdopen(fd, "w") as out:
        json.dump(asdict(stack), out, indent=2)


def down(folder: Path) -> bool:
    """Stop every process of the stack in `folder`; False when none was recorded."""
    stack = load(folder)
    if stack is None:
        return False
    for pid in (stack.mlflow_pid, stack.s3_pid):
        if pid and processes.alive(pid):
            processes.stop(pid)
    pgdata = Path(stack.pgdata)
    if stack.pgdata:
        _stop_postgres(pgdata)
    if stack.pgdata and pgdata.parent.name.startswith("shipyard-pg-"):
        shutil.rmtree(pgdata.parent, ignore_errors=True)
    (folder / STATE).unlink()
    return True
