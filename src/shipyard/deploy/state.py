"""A local deployment's state file, as typed records.

The state file is the deployment's only memory: every change of weight or outcome is written
to it before it takes effect, so a dead controller can be resumed or rolled back from it. A
file that does not parse as these records is refused with the field that is wrong, never
half-read.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from shipyard.errors import ShipyardError


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class Variant(_Record):
    """One `bentoml serve` process serving one version."""

    version: str
    tag: str
    port: int
    pid: int
    log: str

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


class Proxy(_Record):
    """The Envoy clients call; `folder` holds its configuration and its admin socket."""

    port: int
    pid: int
    folder: str
    log: str


class Step(_Record):
    """One judged step: its weight, its traffic and every gate's result."""

    step: int
    weight: int
    passed: bool
    stable_requests: float
    canary_requests: float
    canary_requests_total: float
    gates: list[dict[str, Any]]

    def failed_gates(self) -> list[str]:
        return [g["gate"] for g in self.gates if not g["passed"]]


class DeploymentState(_Record):
    """`version` is the one being deployed; `stable` serves the clients meanwhile."""

    model: str
    version: str
    strategy: str | None = None
    status: str = "starting"
    target: str = "local"
    stable: Variant
    canary: Variant | None = None
    proxy: Proxy | None = None
    step: int = 0
    weight: int = 0
    failures: int = 0
    failures_tolerated: int | None = None
    history: list[Step] = []
    baseline: dict[str, Any] | None = None  # stable's last well-fed window, for 100 % steps
    start_scrapes: list[str] | None = None  # both variants' metrics when gates started counting
    started_at: str | None = None  # ISO time the paired shadow gates count records from

    @classmethod
    def parse(cls, text: str, source: str) -> DeploymentState:
        try:
            return cls.model_validate_json(text)
        except ValidationError as err:
            first = err.errors()[0]
            where = ".".join(str(part) for part in first["loc"]) or "(top level)"
            raise ShipyardError(f"{source}: {where}: {first['msg']}") from None

    def live_canary(self) -> Variant:
        """The canary a running deployment judges; a state without one cannot be stepped."""
        if self.canary is None:
            raise ShipyardError(f"deploy: {self.model}: the deployment has no canary")
        return self.canary

    def live_proxy(self) -> Proxy:
        if self.proxy is None:
            raise ShipyardError(f"deploy: {self.model}: the deployment has no proxy")
        return self.proxy
