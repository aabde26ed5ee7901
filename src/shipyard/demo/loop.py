"""The demo's steps in order: the commands a data scientist, CI and an SRE would run, from raw
data to a retrained champion and a bad version the canary turns away."""

from __future__ import annotations

import contextlib
import json
import shutil
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from shipyard import traffic
from shipyard.artifacts import progress
from shipyard.demo import scratch, services, skew
from shipyard.demo.config import DemoConfig, merge
from shipyard.demo.runner import (
    Backend,
    Background,
    DemoFailed,
    Runner,
    StepTime,
    traffic_figures,
)


class Demo(Runner):
    """The loop's six steps, in order, then the stop; figures go to `summary.json`."""

    def __init__(
        self,
        source: Path,
        workdir: Path,
        config: DemoConfig,
        *,
        in_place: bool = False,
        backend: Backend = "sqlite",
    ) -> None:
        super().__init__(source, workdir, config, in_place=in_place, backend=backend)
        self.history: Any = None  # raw rows whose outcomes are known: features' history
        self.canary_bodies: list[bytes] = []
        self._bad_version = Background(self.train_bad_version)

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
            self.figures["backend"] = self.backend
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
        server = None
        if self.backend == "postgres":
            self.start_stack()
        else:
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
        if server is not None:
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
        front = f"http://127.0.0.1:{self.proxy_port}"
        receiver = services.webhook_receiver(
            self.repo, self.logs, self.env, self.env["MLFLOW_TRACKING_URI"], self.proxy_port
        )
        self.services.append(receiver)
        progress("demo", f"webhook receiver on {receiver.url}, registered with MLflow")
        time.sleep(1.5)  # MLFLOW_WEBHOOK_CACHE_TTL: the server sees the new webhook
        self.sh("shipyard", "promote", self.name, "@candidate", "--to", "champion")
        self.sh("shipyard", "deploy", "start", self.name, "--port", str(self.proxy_port))
        progress("demo", f"clients call {front}")

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
            url = f"http://127.0.0.1:{self.proxy_port}"
            sent = traffic.Clients(
                url, traffic.bodies(features, id_column), threads=cfg.concurrency
            )
            tally = sent.wait()
            self.figures["traffic"][label] = traffic_figures(tally)
            progress("demo", f"{label}: {tally.sent} requests, {tally.failed} failed")
            time.sleep(1.5)  # the prediction log flushes every second
            window = f"{start.isoformat()}/{datetime.now(UTC).isoformat()}"
            code = self.sh(
                "shipyard", "drift", "check", self.name, "--window", window, codes=(0, 3, 4)
            )
            codes.append(code)
            self.figures["drift"].append({"window": label, "exit": code, **self._quality()})
            # Outcomes arrive after the window was judged, as chargebacks do.
            self.sh("shipyard", "monitor", "labels", str(self.workdir / "live" / f"{label}.csv"))
            history = pd.concat([history, live], ignore_index=True)
        self.history = history
        if codes[-1] != 4:
            raise DemoFailed(
                f"demo: step 'live traffic': drift check exit codes {codes}: the drifted "
                f"period did not trigger retraining; reports in {self.repo / 'monitoring'}"
            )

    def _quality(self) -> dict[str, str]:
        """The label-free quality line of the report the drift check just wrote, and the
        drifted features it names as costing quality."""
        from shipyard.monitoring.report import estimated_text, explained_text

        reports = self.repo / "monitoring" / "reports" / self.name
        newest = max(reports.glob("*/*.json"), key=lambda p: p.stat().st_mtime, default=None)
        if newest is None:
            raise DemoFailed(f"demo: step 'live traffic': no drift report in {reports}")
        summary = json.loads(newest.read_text())
        return {"estimated": estimated_text(summary), "explained": explained_text(summary)}

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
        url = f"http://127.0.0.1:{self.proxy_port}"
        return traffic.Clients(
            url,
            self.canary_bodies,
            threads=self.config.concurrency,
            repeat=True,
            pause=self.config.canary_client_pause,
        )

    def canary(self) -> None:
        version = self.figures["v2"]
        clients = self._canary_clients()
        try:
            self.sh("shipyard", "promote", self.name, "@candidate", "--to", "challenger")
            # Past its first step the canary's windows are bound by time, not by requests:
            # the bad version trains on the spare minutes instead of after them.
            during = (self.config.train_bad_version_at_step, self._bad_version.start)
            state = self.await_deployment(version, at_step=during)
        finally:
            tally = clients.close()
        self.figures["traffic"]["canary"] = traffic_figures(tally)
        self.figures["canary"] = {"version": version, "status": state.status}
        progress(
            "demo",
            f"canary of v{version}: {state.status}; "
            f"{tally.failed} of {tally.sent} client requests failed",
        )
        if state.status != "promoted":
            raise DemoFailed(
                f"demo: step 'canary': version {version} ended {state.status}, not promoted; "
                f"`shipyard deploy status {self.name}` in {self.repo}"
            )

    def train_bad_version(self) -> None:
        """The skewed stages, then its Bento, so the shadow can start at once; beside a
        canary, at `bad_version_niceness` (the lowest CPU priority by default)."""
        started = time.monotonic()
        niceness = ("nice", "-n", str(self.config.bad_version_niceness))
        pipeline = skew.prepare(self.repo, Path("build/skewed"), self.config.skew)
        progress("demo", f"bad version: training on {skew.describe(self.config.skew)}")
        for stage in skew.STAGES:
            self.sh(*niceness, *pipeline.stage_args(stage), step="bad version")
        version = self.alias("candidate")
        if version is None or version == self.figures.get("v2"):
            raise DemoFailed("demo: step 'bad version': the skewed stages registered no version")
        self.client().set_model_version_tag(
            self.name, version, skew.TAG, skew.describe(self.config.skew)
        )
        self.sh(*niceness, "shipyard", "package", f"{self.name}@{version}", step="bad version")
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
            state = self.await_deployment(version)
        finally:
            tally = clients.close()
        self.figures["traffic"]["bad version"] = traffic_figures(tally)
        failed = state.history[-1].failed_gates()
        self.figures["bad_version"] = {
            "version": version,
            "status": state.status,
            "failed_gates": failed,
        }
        progress(
            "demo",
            f"shadow of v{version}: {state.status} ({', '.join(failed)}); "
            f"answers clients got, by variant: {tally.by_variant()}",
        )
        if state.status != "rejected":
            raise DemoFailed(
                f"demo: step 'bad version': version {version} ended {state.status}, not rejected"
            )
