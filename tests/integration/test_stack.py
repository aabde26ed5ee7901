"""The team stack for real: PostgreSQL, moto's S3 server and `mlflow server` on loopback."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
import yaml

from shipyard import locks, registry, stack
from shipyard.deploy import processes
from shipyard.errors import ShipyardError
from tests.conftest import REPO
from tests.integration.registry_fixtures import NAME, register

pytestmark = pytest.mark.stack

HOLDER = """
import sys, time
from shipyard import locks
with locks.advisory(sys.argv[1], "registry-held"):
    print("held", flush=True)
    time.sleep(600)
"""


def bucket_client(running: stack.Stack) -> Any:
    """The S3 client the server uses, with the stack's keys."""
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=running.s3_endpoint,
        aws_access_key_id=running.access_key,
        aws_secret_access_key=running.secret_key,
        region_name=stack.REGION,
    )


@pytest.fixture(scope="module")
def own_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, stack.Stack]]:
    """A stack of this module's own: its last test stops it."""
    folder = tmp_path_factory.mktemp("own-stack")
    running = stack.up(folder, say=lambda _: None)
    try:
        yield folder, running
    finally:
        stack.down(folder)


def test_artifacts_go_through_the_server_to_the_bucket(
    tmp_path: Path, own_stack: tuple[Path, stack.Stack], monkeypatch: pytest.MonkeyPatch
) -> None:

    _, running = own_stack
    for key, value in running.client_env().items():
        monkeypatch.setenv(key, value)
    run_id = registry.resolve(NAME, register(tmp_path)).run_id
    from mlflow import MlflowClient

    run = MlflowClient().get_run(run_id)
    assert run.info.artifact_uri.startswith("mlflow-artifacts:/")  # no local path anywhere
    s3 = bucket_client(running)
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=running.bucket)["Contents"]]
    assert any(k.endswith("/MLmodel") for k in keys) and any(k.endswith(".skops") for k in keys)
    assert any(run.info.run_id in k and k.endswith(".parquet") for k in keys)  # frozen test set


def test_a_lost_bucket_registers_nothing_and_is_named(
    tmp_path: Path, own_stack: tuple[Path, stack.Stack], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server's bucket is gone: the client, behind the artifact proxy, gets one line
    saying the artifact store failed (not that the server is away); no version is made
    without its artifacts; the server-side check names the bucket; once it is back,
    registering works again."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from shipyard.errors import tracking_message

    _, running = own_stack
    for key, value in running.client_env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")  # seconds, not minutes
    s3 = bucket_client(running)
    kept = {}  # the earlier versions' artifacts, put back with the bucket
    for item in s3.list_objects_v2(Bucket=running.bucket).get("Contents", []):
        kept[item["Key"]] = s3.get_object(Bucket=running.bucket, Key=item["Key"])["Body"].read()
        s3.delete_object(Bucket=running.bucket, Key=item["Key"])
    s3.delete_bucket(Bucket=running.bucket)
    client = MlflowClient()
    before = len(client.search_model_versions(f"name='{NAME}'"))
    with pytest.raises(MlflowException) as caught:
        register(tmp_path, seed=5)
    line = tracking_message(caught.value.message)
    assert line.startswith(f"tracking server {running.tracking_uri}: its artifact store failed")
    assert len(client.search_model_versions(f"name='{NAME}'")) == before
    with pytest.raises(ShipyardError, match=f"bucket '{running.bucket}' does not exist"):
        stack.check(running)
    s3.create_bucket(Bucket=running.bucket)
    for key, body in kept.items():
        s3.put_object(Bucket=running.bucket, Key=key, Body=body)
    assert stack.check(running)[-1].endswith("read and write ok")
    version = register(tmp_path, seed=5)
    assert len(client.search_model_versions(f"name='{NAME}'")) == before + 1
    assert client.get_model_version(NAME, version).run_id


def test_the_advisory_lock_waits_for_its_holder_and_a_killed_holder_frees_it(
    own_stack: tuple[Path, stack.Stack],
) -> None:
    _, running = own_stack
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, running.database_uri],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ},
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        refused = pytest.raises(ShipyardError, match="still held after 1 s")
        with refused, locks.advisory(running.database_uri, "registry-held", timeout=1):
            pytest.fail("granted while another process holds it")
        holder.kill()  # no unlock: PostgreSQL ends the session and its lock with it
        holder.wait(timeout=10)
        start = time.monotonic()
        with locks.advisory(running.database_uri, "registry-held", timeout=30):
            assert time.monotonic() - start < 10
    finally:
        holder.kill()


def test_a_server_killed_mid_promotion_moves_no_alias_and_the_next_promotion_works(
    tmp_path: Path,
    own_stack: tuple[Path, stack.Stack],
    monkeypatch: pytest.MonkeyPatch,
    raw_params: dict[str, Any],
) -> None:
    """The promoter judged its gates and waits for the lock; the server dies before it
    commits. No alias moves without its record, the promoter says so in one line, and once
    the server is back the same promotion goes through."""
    from shipyard import promotion, runtime
    from shipyard.policy import load_policy

    folder, running = own_stack
    for key, value in running.client_env().items():
        monkeypatch.setenv(key, value)
    policy = load_policy(REPO / "registry" / "policy.yaml")
    champion = register(tmp_path)
    promotion.promote(NAME, champion, "champion", policy)
    contender = register(tmp_path, seed=1, canary="passed")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw_params))
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    env["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "1"  # fail within seconds, not minutes
    cmd = ["shipyard", "promote", NAME, contender, "--to", "champion"]
    cmd += ["--policy", str(REPO / "registry" / "policy.yaml")]
    with runtime.lock(f"registry-{NAME}"):  # hold it: the promoter stops before its commit
        proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, text=True, stderr=subprocess.PIPE)
        assert proc.stderr is not None
        lines: list[str] = []
        for line in proc.stderr:
            lines.append(line)
            if "waiting for the registry lock" in line:
                break
        assert lines and "waiting for the registry lock" in lines[-1], lines
        os.killpg(running.mlflow_pid, signal.SIGKILL)  # the server and its workers, at once
        deadline = time.monotonic() + 30
        while processes.alive(running.mlflow_pid) and time.monotonic() < deadline:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(running.mlflow_pid, os.WNOHANG)  # ours: reap it
            time.sleep(0.1)
    rest = proc.stderr.read()
    assert proc.wait(timeout=300) == 1
    assert rest.strip().splitlines()[-1].startswith("error: tracking server "), rest[-2000:]
    stack.restart_server(folder)

    def held() -> str | None:
        mv = registry.version_by_alias(NAME, registry.CHAMPION)
        return None if mv is None else str(mv.version)

    assert held() == champion  # not moved: it never reached its commit
    record = promotion.promote(NAME, contender, "champion", policy)  # the next one works
    assert record["decision"] == "passed" and held() == contender


def test_the_server_runs_the_workers_recorded(own_stack: tuple[Path, stack.Stack]) -> None:
    """One worker by default: the server's own process tree holds no spawned worker (each
    would import MLflow again). A restarted server keeps the recorded count."""
    folder, _ = own_stack
    running = stack.load(folder)
    assert running is not None and running.server_workers == stack.SERVER_WORKERS == 1
    tree = psutil.Process(running.mlflow_pid).children(recursive=True)
    spawned = [p for p in tree if "multiprocessing" in " ".join(p.cmdline())]
    assert spawned == [], [p.cmdline() for p in spawned]
    assert [p for p in tree if "uvicorn" in " ".join(p.cmdline())], "no server process"


def test_down_stops_every_process(own_stack: tuple[Path, stack.Stack]) -> None:
    folder, _ = own_stack
    running = stack.load(folder)  # as recorded now: the server may have been restarted
    assert running is not None and processes.alive(running.mlflow_pid)
    assert stack.down(folder) is True
    assert not processes.alive(running.mlflow_pid) and not processes.alive(running.s3_pid)
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", running.postgres_port), 2):
        pass
    assert stack.load(folder) is None and not Path(running.pgdata).exists()
    assert stack.down(folder) is False  # twice is harmless
