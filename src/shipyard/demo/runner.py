"""Running the demo's steps: each one timed, its commands' output in a log named after it,
and a failure turned into one line naming the step and the log."""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from shipyard import traffic
from shipyard.artifacts import progress
from shipyard.demo import scratch, services
from shipyard.demo.config import DemoConfig
from shipyard.deploy import processes
from shipyard.deploy.state import DeploymentState
from shipyard.errors import ShipyardError

STEPS = ("pipeline", "first champion", "live traffic", "retrain", "canary", "bad version")
FINAL = (
    "promoted",
    "rejected",
    "aborted",
    "failed to start",
    "rolled back after restart",
    "stopped",
)
# Lines worth echoing from a step's output: our progress lines and DVC's stage headers.
_ECHO = re.compile(r"^\[\s*\d+\.\ds\]|^Running stage|^error:")


# Where the registry lives: `mlflow server` on the copy's sqlite file, or the team stack
# (PostgreSQL, S3 through the server's artifact proxy, the advisory lock) on loopback.
Backend = Literal["sqlite", "postgres"]


class DemoFailed(ShipyardError):
    pass


@dataclass
class StepTime:
    name: str
    seconds: float


class Runner:
    """Where the demo runs (a scratch copy or the working tree), with what environment, and
    the processes it started; every process carries `services.MARK` so none can escape."""

    def __init__(
        self,
        source: Path,
        workdir: Path,
        config: DemoConfig,
        *,
        in_place: bool = False,
        backend: Backend = "sqlite",
    ) -> None:
        self.config = config
        self.backend = backend
        self.source = source.resolve()
        self.workdir = workdir.resolve()
        self.logs = self.workdir / "logs"
        self.repo = self.source if in_place else self.workdir / "repo"
        self.in_place = in_place
        self.run_id = uuid.uuid4().hex
        self.times: list[StepTime] = []
        self.services: list[services.Service] = []
        self.proxy_port = processes.free_port()
        self.figures: dict[str, Any] = {"traffic": {}, "drift": [], "versions": {}}
        self.env = self._env()
        self._step = ""

    def _env(self) -> dict[str, str]:
        drop = ("MLFLOW_TRACKING", "MLFLOW_REGISTRY", "SHIPYARD_RUNTIME_DIR", "BENTOML_HOME")
        env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
        env.update(scratch.GIT_IDENTITY)
        env.update(
            {
                "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
                "PYTHONPATH": str(self.repo / "src"),
                "BENTOML_HOME": str(self.repo / ".shipyard" / "bentoml"),
                "SHIPYARD_ACTOR": "shipyard demo",
                # One key per run, as CI and the promoter would hold it: decisions get signed.
                "SHIPYARD_DECISION_KEY": env.get("SHIPYARD_DECISION_KEY") or secrets.token_hex(32),
                "MLFLOW_DISABLE_TELEMETRY": "true",
                "DVC_NO_ANALYTICS": "1",
                services.MARK: self.run_id,
            }
        )
        return env

    @property
    def name(self) -> str:
        return str(self.params["base"]["model_name"])

    @property
    def params(self) -> dict[str, Any]:
        loaded: dict[str, Any] = yaml.safe_load((self.repo / "params.yaml").read_text())
        return loaded

    # --- running things ------------------------------------------------------------------

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        number = STEPS.index(name) + 1 if name in STEPS else len(STEPS) + 1
        progress("demo", f"step {number}/{len(STEPS)}: {name}")
        self._step = name
        started = time.monotonic()
        try:
            yield
        except DemoFailed:
            raise
        except Exception as err:
            raise DemoFailed(f"demo: step '{name}' failed: {err}; logs in {self.logs}") from err
        seconds = time.monotonic() - started
        self.times.append(StepTime(name, seconds))
        progress("demo", f"step {number}/{len(STEPS)}: {name} done in {seconds:.0f} s")

    def sh(
        self,
        *cmd: str,
        codes: tuple[int, ...] = (0,),
        step: str | None = None,
    ) -> int:
        """Run a command in the copy, its output in the step's log; progress lines echoed."""
        step = step or self._step
        log = self.logs / f"{STEPS.index(step) + 1}-{step.replace(' ', '-')}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        progress("demo", f"$ {' '.join(cmd)}")
        last = ""
        with log.open("a") as out:
            out.write(f"$ {' '.join(cmd)}\n")
            proc = subprocess.Popen(
                cmd,
                cwd=self.repo,
                env=self.env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            assert proc.stdout is not None
            for line in proc.stdout:
                out.write(line)
                if line.strip():
                    last = line.strip()
                if _ECHO.search(line):
                    print(f"    {line.rstrip()}", file=sys.stderr, flush=True)
            code = proc.wait()
        if code not in codes:
            raise DemoFailed(
                f"demo: step '{step}' failed: `{' '.join(cmd[:4])}` exited {code}: "
                f"{last}; log: {log}"
            )
        return code

    def client(self) -> Any:
        from shipyard import registry

        return registry.client(self.env["MLFLOW_TRACKING_URI"])

    def alias(self, alias: str) -> str | None:
        from shipyard import registry

        held = registry.version_by_alias(self.name, alias, self.env["MLFLOW_TRACKING_URI"])
        return None if held is None else str(held.version)

    # --- the steps -----------------------------------------------------------------------

    def await_deployment(
        self, version: str, at_step: tuple[int, Callable[[], None]] | None = None
    ) -> DeploymentState:
        """Until the canary the webhook started for `version` has an outcome.

        `at_step` (index, callback): the callback runs once when the canary reaches that step.
        """
        path = self.repo / ".shipyard" / "deploy" / f"{self.name}.json"
        receiver = next(s for s in self.services if s.name == "webhook receiver")
        deadline = time.monotonic() + self.config.step_timeout
        echoed = receiver.log.stat().st_size if receiver.log.exists() else 0
        while time.monotonic() < deadline:
            time.sleep(1)
            with receiver.log.open() as log:  # the receiver runs the canary: relay its progress
                log.seek(echoed)
                for line in log:
                    if "deploy:" in line or "webhook:" in line:
                        print(f"    {line.rstrip()}", file=sys.stderr, flush=True)
                echoed = log.tell()
            if not processes.alive(receiver.pid):
                raise DemoFailed(f"demo: the webhook receiver exited; log: {receiver.log}")
            if path.exists():
                state = DeploymentState.parse(path.read_text(), str(path))
                if state.version != version:
                    continue
                if state.status in FINAL:
                    return state
                if at_step and state.status == "running" and state.step >= at_step[0]:
                    at_step[1]()
                    at_step = None
        raise DemoFailed(
            f"demo: step '{self._step}': no canary outcome for version {version} after "
            f"{self.config.step_timeout:.0f} s; log: {receiver.log}"
        )

    def versions(self) -> dict[str, dict[str, Any]]:
        from shipyard import registry

        client = self.client()
        out = {}
        for mv in registry.versions(self.name, self.env["MLFLOW_TRACKING_URI"]):
            detail = client.get_model_version(self.name, mv.version)
            out[str(mv.version)] = {
                "tags": dict(detail.tags),
                "aliases": list(detail.aliases),
                # where its run's artifacts went: the copy's folder, or the server's proxy
                "artifact_uri": client.get_run(mv.run_id).info.artifact_uri,
            }
        return out

    @property
    def stack_folder(self) -> Path:
        return self.workdir / "stack"

    def start_stack(self) -> None:
        """The team stack in the work folder; the clients get only its exports, as against a
        team's own server."""
        from shipyard import stack

        marked = {services.MARK: self.run_id}
        running = stack.up(self.stack_folder, say=lambda line: progress("demo", line), env=marked)
        self.env.update(running.client_env())
        progress("demo", f"team stack up: {running.tracking_uri} (state in {self.stack_folder})")

    def stop(self) -> int:
        """Receiver (no new canary can start), deployment, server; then sweep what escaped."""
        for service in reversed(self.services):
            if service.name != "mlflow server":
                processes.stop(service.pid)
        if (self.repo / ".shipyard" / "deploy" / f"{self.name}.json").exists():
            subprocess.run(
                [processes.bin_path("shipyard"), "deploy", "stop", self.name],
                cwd=self.repo,
                env=self.env,
                capture_output=True,
                check=False,
            )
        for service in self.services:
            if service.name == "mlflow server":
                processes.stop(service.pid)
        if self.backend == "postgres":
            from shipyard import stack

            stack.down(self.stack_folder)
        return services.sweep(self.run_id)


class Background(threading.Thread):
    """A step's work on another thread; its exception is kept for the step to raise."""

    def __init__(self, work: Callable[[], None]) -> None:
        super().__init__(name="demo-background", daemon=True)
        self.work = work
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.work()
        except BaseException as err:
            self.error = err


def traffic_figures(t: traffic.Tally) -> dict[str, Any]:
    """With the first failure's text: a count alone cannot say what a client got."""
    return {
        "sent": t.sent,
        "failed": t.failed,
        "by_variant": t.by_variant(),
        "first_error": t.first_error,
    }
