"""The demo's steps in order. Each one runs the commands a user or CI would, logs their output
to a file named after the step, and, when it fails, says which step and where the log is."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from shipyard.artifacts import progress
from shipyard.demo import scratch, services, skew, traffic
from shipyard.demo.config import DemoConfig, merge
from shipyard.deploy import processes
from shipyard.errors import ShipyardError

STEPS = ("pipeline", "first champion", "live traffic", "retrain", "canary", "bad version")
FINAL = ("promoted", "rejected", "failed to start", "rolled back after restart", "stopped")
# Lines worth echoing from a step's output: our progress lines and DVC's stage headers.
_ECHO = re.compile(r"^\[\s*\d+\.\ds\]|^Running stage|^error:")


class DemoFailed(ShipyardError):
    pass


@dataclass
class StepTime:
    name: str
    seconds: float


class Demo:
    def __init__(
        self, source: Path, workdir: Path, config: DemoConfig, *, in_place: bool = False
    ) -> None:
        self.config = config
        self.source = source.resolve()
        self.workdir = workdir.resolve()
        self.logs = self.workdir / "logs"
        self.repo = self.source if in_place else self.workdir / "repo"
        self.in_place = in_place
        self.run_id = uuid.uuid4().hex
        self.times: list[StepTime] = []
        self.services: list[services.Service] = []
        self.router_port = processes.free_port()
        self.figures: dict[str, Any] = {"traffic": {}, "drift": [], "versions": {}}
        self.env = self._env()
        self._step = ""
        self.history: Any = None  # raw rows whose outcomes are known: features' history
        self.canary_bodies: list[bytes] = []
        self._bad_version = _Background(self.train_bad_version)

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
        cwd: Path | None = None,
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
                cwd=cwd or self.repo,
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
        from mlflow import MlflowClient

        uri = self.env["MLFLOW_TRACKING_URI"]
        return MlflowClient(tracking_uri=uri, registry_uri=uri)

    def alias(self, alias: str) -> str | None:
        from mlflow.exceptions import MlflowException

        try:
            return str(self.client().get_model_version_by_alias(self.name, alias).version)
        except MlflowException:
            return None

    # --- the steps -----------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        shutil.rmtree(self.logs, ignore_errors=True)  # this run's logs only
        (self.workdir / "summary.json").unlink(missing_ok=True)
        memory = services.MemoryPeak()
        started = time.monotonic()
        try:
            with self.step("pipeline"):
                self.pipeline()
            with self.step("first champion"):
                self.first_champion()
            with self.step("live traffic"):
                self.live_traffic()
            with self.step("retrain"):
                self.retrain()
            with self.step("canary"):
                self.canary()
            with self.step("bad version"):
                self.bad_version()
        finally:
            if "MLFLOW_TRACKING_URI" in self.env:
                with contextlib.suppress(Exception):  # a failed step still gets its table
                    self.figures["versions"] = self.versions()
            stop_started = time.monotonic()
            self.figures["stray_processes"] = self.stop()
            self.times.append(StepTime("stop", time.monotonic() - stop_started))
            self.figures["peak_memory_bytes"] = memory.stop()
            self.figures["seconds"] = time.monotonic() - started
            self.figures["steps"] = {t.name: round(t.seconds, 1) for t in self.times}
            self.figures["left_running"] = len(services.leftovers(self.run_id))
            self.figures["repo"] = str(self.repo)
            self.figures["logs"] = str(self.logs)
            self.workdir.mkdir(parents=True, exist_ok=True)
            (self.workdir / "summary.json").write_text(json.dumps(self.figures, indent=2))
        return self.figures

    def pipeline(self) -> None:
        if not self.in_place:
            shutil.rmtree(self.repo, ignore_errors=True)
            scratch.copy_repo(self.source, self.repo)
            for rel, changes in self.config.overrides.items():
                if changes:
                    path = self.repo / rel
                    path.write_text(
                        yaml.safe_dump(merge(yaml.safe_load(path.read_text()), changes))
                    )
            scratch.commit(self.repo, "demo settings")
        server = services.mlflow_server(self.repo, self.logs, self.env)
        self.services.append(server)
        self.env["MLFLOW_TRACKING_URI"] = server.url
        world = self.config.world
        if world is None:
            self.sh("shipyard", "data", "bootstrap")
        else:
            from shipyard.data.simulator import write_csv

            (self.repo / "data").mkdir(exist_ok=True)
            frame = self.world().period(0, world.days)
            write_csv(frame, str(self.repo / "data" / "transactions.csv"))
            self.sh("dvc", "add", "-q", "data")
            scratch.commit(self.repo, "demo data")
        services.ready(server)
        progress("demo", f"MLflow server on {server.url} (store {self.repo / '.shipyard'})")
        self.sh("dvc", "repro")
        self.figures["v1"] = self.alias("candidate")

    def world(self) -> Any:
        from shipyard.data.simulator import Simulator

        w = self.config.world
        if w is None:
            return Simulator()
        return Simulator(n_customers=w.customers, n_terminals=w.terminals, seed=w.seed)

    def first_day(self) -> int:
        from shipyard.data.bootstrap import DEFAULT_DAYS

        return self.config.world.days if self.config.world else DEFAULT_DAYS

    def first_champion(self) -> None:
        if self.alias("champion") is not None:
            raise DemoFailed(
                f"demo: {self.name} already has a @champion in {self.repo / '.shipyard'}; "
                "the demo starts from a store without one (run it without IN_PLACE=1)"
            )
        router = f"http://127.0.0.1:{self.router_port}"
        receiver = services.webhook_receiver(
            self.repo, self.logs, self.env, self.env["MLFLOW_TRACKING_URI"], self.router_port
        )
        self.services.append(receiver)
        progress("demo", f"webhook receiver on {receiver.url}, registered with MLflow")
        time.sleep(1.5)  # MLFLOW_WEBHOOK_CACHE_TTL: the server sees the new webhook
        self.sh("shipyard", "promote", self.name, "@candidate", "--to", "champion")
        self.sh("shipyard", "package", f"{self.name}@champion")
        self.sh("shipyard", "deploy", "start", self.name, "--port", str(self.router_port))
        progress("demo", f"clients call {router}")

    def _features(self, frame: Any, history: Any) -> Any:
        from shipyard.config import parse_params
        from shipyard.data.replay import live_features

        return live_features(history, frame, parse_params(self.params))

    def _period(self, label: str, first: int, drifted: bool) -> Any:
        from shipyard.config import parse_params
        from shipyard.data.replay import load_period
        from shipyard.data.simulator import Drift, write_csv

        last = first + (self.config.canary_days if label == "canary" else self.config.window_days)
        drift = Drift(**self.config.drift) if drifted else None
        path = self.workdir / "live" / f"{label}.csv"  # beside the copy, not in it
        path.parent.mkdir(parents=True, exist_ok=True)
        write_csv(self.world().period(first, last, drift), str(path))
        return load_period(path, parse_params(self.params))

    def live_traffic(self) -> None:
        import pandas as pd

        history = pd.read_parquet(self.repo / "artifacts" / "validated" / "data.parquet")
        cfg = self.config
        windows = [(f"calm-{i + 1}", False) for i in range(cfg.calm_windows)]
        windows += [(f"drift-{i + 1}", True) for i in range(cfg.drift_windows)]
        id_column = self.params["data"]["id"]
        codes = []
        for k, (label, drifted) in enumerate(windows):
            live = self._period(label, self.first_day() + k * cfg.window_days, drifted)
            features = self._features(live, history)
            start = datetime.now(UTC)
            url = f"http://127.0.0.1:{self.router_port}"
            sent = traffic.Clients(
                url, traffic.bodies(features, id_column), threads=cfg.concurrency
            )
            tally = sent.wait()
            self.figures["traffic"][label] = _tally(tally)
            progress("demo", f"{label}: {tally.sent} requests, {tally.failed} failed")
            time.sleep(1.5)  # the prediction log flushes every second
            window = f"{start.isoformat()}/{datetime.now(UTC).isoformat()}"
            code = self.sh(
                "shipyard", "drift", "check", self.name, "--window", window, codes=(0, 3, 4)
            )
            codes.append(code)
            self.figures["drift"].append({"window": label, "exit": code})
            # Outcomes arrive after the window was judged, as chargebacks do.
            self.sh("shipyard", "monitor", "labels", str(self.workdir / "live" / f"{label}.csv"))
            history = pd.concat([history, live], ignore_index=True)
        self.history = history
        if codes[-1] != 4:
            raise DemoFailed(
                f"demo: step 'live traffic': drift check exit codes {codes}: the drifted "
                f"period did not trigger retraining; reports in {self.repo / 'monitoring'}"
            )

    def retrain(self) -> None:
        self.sh("shipyard", "retrain", self.name)
        self.figures["v2"] = self.alias("candidate")

    def _canary_clients(self) -> traffic.Clients:
        if not self.canary_bodies:
            cfg = self.config
            first = self.first_day() + (cfg.calm_windows + cfg.drift_windows) * cfg.window_days
            live = self._period("canary", first, True)
            features = self._features(live, self.history)
            self.canary_bodies = traffic.bodies(features, self.params["data"]["id"])
        url = f"http://127.0.0.1:{self.router_port}"
        return traffic.Clients(
            url, self.canary_bodies, threads=self.config.concurrency, repeat=True
        )

    def _await_deployment(
        self, version: str, past_first_step: Callable[[], None] | None = None
    ) -> dict[str, Any]:
        """Until the canary the webhook started for `version` has an outcome.

        `past_first_step` runs once when the canary reaches its second step.
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
                state: dict[str, Any] = json.loads(path.read_text())
                if str(state.get("version")) != version:
                    continue
                if state.get("status") in FINAL:
                    return state
                if past_first_step and state.get("status") == "running" and state["step"] >= 1:
                    past_first_step()
                    past_first_step = None
        raise DemoFailed(
            f"demo: step '{self._step}': no canary outcome for version {version} after "
            f"{self.config.step_timeout:.0f} s; log: {receiver.log}"
        )

    def canary(self) -> None:
        version = self.figures["v2"]
        clients = self._canary_clients()
        try:
            self.sh("shipyard", "promote", self.name, "@candidate", "--to", "challenger")
            # Past its first step the canary's windows are bound by time, not by requests:
            # the bad version trains on the spare minutes instead of after them.
            state = self._await_deployment(version, past_first_step=self._bad_version.start)
        finally:
            tally = clients.close()
        self.figures["traffic"]["canary"] = _tally(tally)
        self.figures["canary"] = {"version": version, "status": state["status"]}
        progress(
            "demo",
            f"canary of v{version}: {state['status']}; "
            f"{tally.failed} of {tally.sent} client requests failed",
        )
        if state["status"] != "promoted":
            raise DemoFailed(
                f"demo: step 'canary': version {version} ended {state['status']}, not promoted; "
                f"`shipyard deploy status {self.name}` in {self.repo}"
            )

    def train_bad_version(self) -> None:
        """The skewed stages, then its Bento, so the shadow can start at once."""
        started = time.monotonic()
        dest = skew.prepare(self.repo, self.repo / "build" / "skewed", self.config.skew)
        progress("demo", f"bad version: training on {skew.describe(self.config.skew)}")
        for stage in skew.STAGES:
            self.sh("shipyard", "stage", stage, cwd=dest, step="bad version")
        version = self.alias("candidate")
        if version is None or version == self.figures.get("v2"):
            raise DemoFailed("demo: step 'bad version': the skewed stages registered no version")
        self.client().set_model_version_tag(
            self.name, version, skew.TAG, skew.describe(self.config.skew)
        )
        self.sh("shipyard", "package", f"{self.name}@{version}", step="bad version")
        self.figures["v3"] = version
        self.figures["bad_version_training_seconds"] = round(time.monotonic() - started, 1)

    def bad_version(self) -> None:
        if not self._bad_version.is_alive() and self._bad_version.ident is None:
            self._bad_version.start()  # the canary ended before its second step
        self._bad_version.join()
        if self._bad_version.error is not None:
            raise self._bad_version.error
        version = self.figures["v3"]
        clients = self._canary_clients()
        try:
            self.sh(
                "shipyard",
                "promote",
                self.name,
                "@candidate",
                "--to",
                "challenger",
                "--strategy",
                "shadow",
            )
            state = self._await_deployment(version)
        finally:
            tally = clients.close()
        self.figures["traffic"]["bad version"] = _tally(tally)
        failed = [g["gate"] for g in state["history"][-1]["gates"] if not g["passed"]]
        self.figures["bad_version"] = {
            "version": version,
            "status": state["status"],
            "failed_gates": failed,
        }
        progress(
            "demo",
            f"shadow of v{version}: {state['status']} ({', '.join(failed)}); "
            f"answers clients got, by variant: {tally.by_variant()}",
        )
        if state["status"] != "rejected":
            raise DemoFailed(
                f"demo: step 'bad version': version {version} ended {state['status']}, not rejected"
            )

    def versions(self) -> dict[str, dict[str, Any]]:
        client = self.client()
        out = {}
        for mv in client.search_model_versions(f"name='{self.name}'"):
            detail = client.get_model_version(self.name, mv.version)
            out[str(mv.version)] = {"tags": dict(detail.tags), "aliases": list(detail.aliases)}
        return out

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
        return services.sweep(self.run_id)


class _Background(threading.Thread):
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


def _tally(t: traffic.Tally) -> dict[str, Any]:
    return {"sent": t.sent, "failed": t.failed, "by_variant": t.by_variant()}
