"""The long-running processes of the demo: an MLflow server that fires the registry webhook,
the webhook receiver that canaries new challengers, and a sweep that leaves nothing running.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import threading
from dataclasses import dataclass
from pathlib import Path

import psutil

from shipyard.deploy import processes
from shipyard.stack import MLFLOW_SERVER_ENV


@dataclass(frozen=True)
class Service:
    name: str
    pid: int
    url: str
    log: Path


def mlflow_server(repo: Path, logs: Path, env: dict[str, str]) -> Service:
    """`mlflow server` over the copy's own sqlite store; clients write artifacts beside it.

    Returns once started, not ready: the caller has other work while it boots (`ready`).
    """
    from cryptography.fernet import Fernet

    port = processes.free_port()
    store = repo / ".shipyard"
    store.mkdir(parents=True, exist_ok=True)
    server_env = {
        **env,
        **MLFLOW_SERVER_ENV,
        "MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY": Fernet.generate_key().decode(),
    }
    server_env.pop("MLFLOW_TRACKING_URI", None)
    cmd = [processes.bin_path("mlflow"), "server", "--host", "127.0.0.1", "--port", str(port)]
    cmd += ["--backend-store-uri", f"sqlite:///{store / 'mlflow.db'}", "--workers", "1"]
    cmd += ["--default-artifact-root", str(store / "mlartifacts"), "--no-serve-artifacts"]
    log = logs / "mlflow-server.log"
    pid = processes.start(cmd, log, server_env, cwd=repo)
    return Service("mlflow server", pid, f"http://127.0.0.1:{port}", log)


def ready(service: Service, path: str = "/health") -> None:
    processes.wait_ready(f"{service.url}{path}", service.pid, service.log)


def webhook_receiver(
    repo: Path, logs: Path, env: dict[str, str], tracking_uri: str, proxy_port: int
) -> Service:
    """`shipyard webhook serve --mode local`, registered with the MLflow server."""
    from shipyard import registry

    secret = secrets.token_urlsafe(24)
    port = processes.free_port()
    cmd = [processes.bin_path("shipyard"), "webhook", "serve", "--mode", "local"]
    cmd += ["--port", str(port), "--deploy-port", str(proxy_port)]
    log = logs / "webhook.log"
    pid = processes.start(cmd, log, {**env, "SHIPYARD_WEBHOOK_SECRET": secret}, cwd=repo)
    receiver = Service("webhook receiver", pid, f"http://127.0.0.1:{port}", log)
    ready(receiver, "/livez")
    registry.create_webhook(
        "shipyard-demo",
        f"{receiver.url}/webhook",
        ["model_version_alias.created"],
        secret,
        tracking_uri,
    )
    return receiver


MARK = "SHIPYARD_DEMO_RUN"  # in the environment of every process the demo starts


def leftovers(run_id: str) -> list[psutil.Process]:
    """Processes this demo run started, found by the mark every descendant inherits: a
    BentoML worker reparented after its server died is found too."""
    found = []
    for proc in psutil.process_iter(["pid"]):
        try:
            if proc.pid != os.getpid() and proc.environ().get(MARK) == run_id:
                found.append(proc)
        except psutil.Error:
            continue
    return found


def sweep(run_id: str, timeout: float = 10) -> int:
    """Terminate, then kill, whatever `leftovers` finds; returns how many there were."""
    procs = leftovers(run_id)
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            proc.terminate()
    _, alive = psutil.wait_procs(procs, timeout=timeout)
    for proc in alive:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    return len(procs)


class MemoryPeak:
    """Peak of the summed resident memory of this process and every descendant, sampled."""

    def __init__(self, every: float = 1.0) -> None:
        self.peak = 0
        self._every = every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        me = psutil.Process()
        while not self._stop.wait(self._every):
            total = 0
            for proc in [me, *me.children(recursive=True)]:
                try:
                    total += proc.memory_info().rss
                except psutil.Error:
                    continue
            self.peak = max(self.peak, total)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join(timeout=5)
        return self.peak
