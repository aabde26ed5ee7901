"""The BentoML prediction service for one packaged model version.

`shipyard package` writes the serving spec next to a two-line entry module inside the Bento;
`shipyard serve` runs it with `bentoml serve`. The model is read from the BentoML model store
with skops and the allow-list, never unpickled.

Both endpoints feed BentoML's adaptive batching dispatcher (the CorkDispatcher behind
`batchable=True` APIs), so concurrent single-record requests are scored in one model call
while each endpoint keeps its own request shape.

The two prediction paths are answered by `Direct`, inside the guard, with BentoML's own input
models and the same method bodies as the `@bentoml.api` methods. BentoML's per-request
machinery around an API call (Starlette routing, its IO descriptors and serde, the response
object, tracing spans at a sample rate of 0) cost more than the model; the README's serving
section has the figures. BentoML still runs the process, the model store, health, metrics
and the OpenAPI document.
"""

import asyncio
import gc
import json
import logging
import os
import re
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import bentoml
import numpy as np
from bentoml._internal.marshal.dispatcher import CorkDispatcher
from bentoml.exceptions import BentoMLException, InternalServerError, ServiceUnavailable
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    generate_latest,
    multiprocess,
)
from pydantic import BaseModel, ValidationError

from shipyard.runtime import runtime_dir
from shipyard.serving.buckets import BATCH_BUCKETS, LATENCY_BUCKETS
from shipyard.serving.guard import REASONS, Guard, Rejection
from shipyard.serving.openapi import Documented
from shipyard.serving.predlog import PredictionLog
from shipyard.serving.schema import (
    BatchPrediction,
    Prediction,
    RequestId,
    batch_type,
    record_model,
)
from shipyard.serving.spec import load_spec
from shipyard.serving.timeout import install as install_timeout

if TYPE_CHECKING:
    import pandas as pd

install_timeout()
SPEC = load_spec()
Record = record_model(SPEC)
Batch = batch_type(SPEC, Record)
_DTYPES = {
    "double": "float64",
    "float": "float64",
    "long": "int64",
    "integer": "int64",
    "string": "object",
    "boolean": "bool",
}

SCORES = bentoml.metrics.Histogram(
    name="shipyard_prediction_score",
    documentation="Predicted scores, for canary and drift comparisons",
    labelnames=["model_name", "model_version"],
    buckets=SPEC.score_buckets,
)
DECISIONS = bentoml.metrics.Counter(
    name="shipyard_positive_decisions",
    documentation="Predictions whose decision was positive",
    labelnames=["model_name", "model_version"],
)
PREDICTIONS = bentoml.metrics.Counter(
    name="shipyard_predictions",
    documentation="Records scored",
    labelnames=["model_name", "model_version"],
)
REQUESTS = bentoml.metrics.Counter(
    name="shipyard_http_requests",
    documentation="HTTP requests by path and status code",
    labelnames=["model_name", "model_version", "path", "status"],
)
LATENCY = bentoml.metrics.Histogram(
    name="shipyard_http_request_duration_seconds",
    documentation="HTTP request latency by path",
    labelnames=["model_name", "model_version", "path"],
    buckets=LATENCY_BUCKETS,
)
BATCH_SIZE = bentoml.metrics.Histogram(
    name="shipyard_model_batch_size",
    documentation="Records per model call after adaptive batching",
    labelnames=["model_name", "model_version"],
    buckets=BATCH_BUCKETS,
)
REJECTED = bentoml.metrics.Counter(
    name="shipyard_rejected_requests",
    documentation="Requests refused with a 4xx, by reason",
    labelnames=["model_name", "model_version", "reason"],
)
_LABELS = {"model_name": SPEC.model_name, "model_version": SPEC.model_version}
log = logging.getLogger("shipyard.serving")
log.setLevel(logging.INFO)  # BentoML leaves the root at WARNING


def _rejected(rejection: Rejection) -> None:
    """One INFO line and a count per refusal: a client's mistake is not the service's error."""
    REJECTED.labels(**_LABELS, reason=rejection.reason).inc()
    log.info(
        "rejected %s %d %s: %s",
        rejection.path,
        rejection.status,
        rejection.reason,
        rejection.message[:300],
    )


def _exposition() -> bytes:
    """Every worker's series, from the folder `bentoml serve` gives prometheus_client."""
    registry = CollectorRegistry()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.MultiProcessCollector(registry)
    else:  # imported outside `bentoml serve` (tests): this process's own registry
        registry = REGISTRY
    return generate_latest(registry)


async def _metrics(scope: Any, send: Any) -> None:
    """`GET /metrics` (and HEAD, as Starlette routes it); 405 for any other method."""
    if scope.get("method") not in ("GET", "HEAD"):
        headers = [(b"allow", b"GET, HEAD"), (b"content-type", b"text/plain; charset=utf-8")]
        await send({"type": "http.response.start", "status": 405, "headers": headers})
        await send({"type": "http.response.body", "body": b"Method Not Allowed"})
        return
    body = await asyncio.to_thread(_exposition)
    headers = [(b"content-type", CONTENT_TYPE_LATEST.encode())]
    headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else body})


class Metered:
    """Counts every response by status and times it, labelled by model version; answers
    `/metrics` itself.

    BentoML's own request metrics are off (`metrics.enabled: false`): they repeat these
    series, and their six multiprocess-file writes per request cost about a tenth of a
    request. That also removes BentoML's `/metrics` route, so it is served here.
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope.get("path") == "/metrics":
            await _metrics(scope, send)
            return
        start, status = time.perf_counter(), [500]

        async def record(message: Any) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, record)
        finally:
            path = scope.get("path", "")
            REQUESTS.labels(**_LABELS, path=path, status=str(status[0])).inc()
            LATENCY.labels(**_LABELS, path=path).observe(time.perf_counter() - start)


def _log_folder() -> Path:
    default = runtime_dir() / "predictions" / SPEC.model_name
    return Path(os.environ.get("SHIPYARD_PREDICTION_LOG", default))


_PROXY_ID = re.compile(r"[A-Za-z0-9._-]{1,128}")


def _proxy_id(headers: Any) -> str | None:
    """The proxy's `X-Request-Id` (Envoy's): the same on a mirrored copy."""
    value = headers.get("x-request-id", "")
    return value if _PROXY_ID.fullmatch(value) else None


def _overloaded() -> Any:
    raise ServiceUnavailable("overloaded: the batch queue is past its latency budget")


_BODIES = {  # path -> the top-level fields of its input, as the signatures below say
    "/predict": frozenset({"features", "request_id"}),
    "/predict_batch": frozenset({"records", "request_id"}),
}


@bentoml.service(
    name=SPEC.model_name,
    traffic={"timeout": 30},
    logging={"access": {"enabled": False}},  # the prediction log and metrics cover requests
    # Spans are sampled at 0 unless a user configures tracing, yet building them took a
    # trivial endpoint from 12,800 down to 3,600 req/s: these paths are excluded.
    tracing={"excluded_urls": list(_BODIES)},
    metrics={"enabled": False},  # see `Metered`
)
class PredictionService:
    model_ref = bentoml.models.BentoModel(SPEC.bento_model)

    def __init__(self) -> None:
        # Imported here, in the worker: `bentoml serve`'s own process imports this module only
        # to read the service's definition, and sklearn and pandas were half its start-up.
        from shipyard.models import storage

        self.ready = False
        self.model = storage.load_mlflow_model(Path(self.model_ref.path_of("mlflow_model")))
        self.fields = list(SPEC.fields)
        self.log = PredictionLog(_log_folder())
        self.dispatch: Any = None  # created on first use, inside the worker's event loop
        self.scores = SCORES.labels(**_LABELS)
        self.positives = DECISIONS.labels(**_LABELS)
        self.predictions = PREDICTIONS.labels(**_LABELS)
        # Every series exists from the first scrape: a counter that appears only with its
        # first request loses that request's increment to Prometheus' `increase`.
        for reason in REASONS:
            REJECTED.labels(**_LABELS, reason=reason)
        for path in ("/predict", "/predict_batch"):
            LATENCY.labels(**_LABELS, path=path)
            for status in ("200", "400", "401", "413", "415", "500", "503"):
                REQUESTS.labels(**_LABELS, path=path, status=status)
        self._floats = all(_DTYPES.get(kind) == "float64" for kind in SPEC.fields.values())
        self._warm_up()
        # The model's objects (torch, sklearn, pandas) are long-lived: frozen, the collector
        # stops walking them, which cut the p99 under load from about 200 ms to 25 ms.
        gc.collect()
        gc.freeze()
        _LIVE[:] = [self]
        self.ready = True

    def _warm_up(self) -> None:
        """A few model calls before the process says it is ready.

        A fresh process pays for lazy imports and first-call set-up on its first requests. A
        canary, and a shadow above all (it gets every request at once), would show that cost
        as its p99 against a warm stable. Rows at the middle of each recorded range; nothing is
        logged or counted. A model with text fields is left cold: no made-up text is safe.
        """
        if any(kind not in _DTYPES or _DTYPES[kind] == "object" for kind in SPEC.fields.values()):
            return
        row = {
            name: (False if kind == "boolean" else sum(SPEC.field_ranges[name]) / 2)
            for name, kind in SPEC.fields.items()
        }
        frame = self._frame([row] * 8)
        for size in (1, 8, 1):
            self.model.predict_proba(frame.iloc[:size])

    def __is_ready__(self) -> bool:
        return self.ready

    @bentoml.on_shutdown
    def _flush_log(self) -> None:
        """A normal stop writes every pending record; only a kill can lose the last batch."""
        self.log.close()

    def _frame(self, rows: list[dict[str, Any]]) -> "pd.DataFrame":
        """The model's input frame. All-double records become one float64 block in one step:
        per-column casts of a frame built from dicts cost more than the model on small
        batches."""
        import pandas as pd

        if self._floats:
            values = np.array([[row[f] for f in self.fields] for row in rows], dtype=np.float64)
            return pd.DataFrame(values, columns=self.fields, copy=False)
        frame = pd.DataFrame(rows, columns=self.fields)
        return frame.astype({f: _DTYPES[t] for f, t in SPEC.fields.items()})

    def _predict_many(self, groups: list[list[dict[str, Any]]]) -> list[np.ndarray]:
        """One model call for every request the dispatcher gathered; scores split back."""
        flat = [row for group in groups for row in group]
        scores = self.model.predict_proba(self._frame(flat))[:, 1]
        if not np.isfinite(scores).all():  # a diverged model must fail loudly, not answer NaN
            raise InternalServerError("the model returned a non-finite score")
        BATCH_SIZE.labels(**_LABELS).observe(len(flat))
        bounds = np.cumsum([len(g) for g in groups])[:-1]
        return list(np.split(scores, bounds))

    async def _scores(self, rows: list[dict[str, Any]]) -> np.ndarray:
        if self.dispatch is None:
            cork = CorkDispatcher(
                max_latency_in_ms=SPEC.max_latency_ms,
                max_batch_size=SPEC.max_batch,
                fallback=_overloaded,
                get_batch_size=len,
            )
            # A sync callback runs in BentoML's thread pool, off the event loop.
            self.dispatch = cork(self._predict_many)  # type: ignore[arg-type]
        result: np.ndarray = await self.dispatch(rows)
        return result

    async def _score(
        self, records: list[Any], request_id: str | None, proxy_id: str | None
    ) -> list[Prediction]:
        rows = [r.model_dump() for r in records]
        scores = await self._scores(rows)
        base = request_id or proxy_id or uuid.uuid4().hex
        now = datetime.now(UTC).isoformat(timespec="milliseconds")
        out = []
        for i, (row, score) in enumerate(zip(rows, scores, strict=True)):
            rid = base if len(records) == 1 else f"{base}-{i}"
            decision = bool(score >= SPEC.threshold)
            out.append(
                Prediction(
                    request_id=rid,
                    score=float(score),
                    decision=decision,
                    model_name=SPEC.model_name,
                    model_version=SPEC.model_version,
                )
            )
            self.log.append(
                {
                    "request_id": rid,
                    "timestamp": now,
                    **_LABELS,
                    "features": row,
                    "score": float(score),
                    "decision": decision,
                }
            )
            self.scores.observe(float(score))
            if decision:
                self.positives.inc()
        self.predictions.inc(len(records))
        return out

    @bentoml.api
    async def predict(
        self,
        features: Record,  # type: ignore[valid-type]
        ctx: bentoml.Context,
        request_id: RequestId | None = None,
    ) -> Prediction:
        """Score one record of named fields."""
        return (await self._score([features], request_id, _proxy_id(ctx.request.headers)))[0]

    @bentoml.api
    async def predict_batch(
        self,
        records: Batch,  # type: ignore[valid-type]
        ctx: bentoml.Context,
        request_id: RequestId | None = None,
    ) -> BatchPrediction:
        """Score a batch of records; request ids are `<request_id>-<index>`."""
        proxy_id = _proxy_id(ctx.request.headers)
        return BatchPrediction(predictions=await self._score(records, request_id, proxy_id))

    async def answer(self, name: str, given: Any, proxy_id: str | None) -> BaseModel:
        """What `name`'s `@bentoml.api` method returns, for input already validated."""
        if name == "predict":
            return (await self._score([given.features], given.request_id, proxy_id))[0]
        records = await self._score(given.records, given.request_id, proxy_id)
        return BatchPrediction(predictions=records)


_LIVE: list[PredictionService] = []  # the worker's instance, once its model is loaded
_UNEXPECTED = json.dumps(  # BentoML's own 5xx body: the log has the detail
    {"error": "An unexpected error has occurred, please check the server log."}
).encode()


class Direct:
    """One prediction path answered inside the guard, as BentoML would answer it: the body
    validated by BentoML's input model for the method, a 400 in BentoML's shape, the
    method's output as JSON, and a BentoML error's status with BentoML's body."""

    def __init__(self, name: str) -> None:
        self.name = name

    async def __call__(self, payload: dict[str, Any], headers: Any) -> tuple[int, bytes]:
        if not _LIVE:
            return 503, _UNEXPECTED
        try:
            spec = PredictionService.apis[self.name].input_spec  # type: ignore[attr-defined]
            given = spec.model_validate(payload)
        except ValidationError as exc:
            detail = exc.errors(include_context=False, include_input=False)
            error = f"{exc.error_count()} validation error for {exc.title}"
            body = {"error": error, "detail": detail}
            return 400, json.dumps(body, separators=(",", ":")).encode()
        try:
            output = await _LIVE[0].answer(self.name, given, _proxy_id(headers))
        except BentoMLException as exc:
            log.error("%s: %s", self.name, exc)
            return exc.error_code.value, _UNEXPECTED
        except Exception:
            log.exception("%s failed", self.name)
            return 500, _UNEXPECTED
        return 200, output.model_dump_json().encode()


_API_KEY = os.environ.get("SHIPYARD_API_KEY") or None
# Outermost first: metering sees the guard's refusals; the guard keeps the document private.
PredictionService.add_asgi_middleware(Metered)  # type: ignore[attr-defined]
PredictionService.add_asgi_middleware(  # type: ignore[attr-defined]
    Guard,
    api_key=_API_KEY,
    max_body_bytes=SPEC.max_body_bytes,
    bodies=_BODIES,
    on_reject=_rejected,
    endpoints={path: Direct(path.removeprefix("/")) for path in _BODIES},
)
PredictionService.add_asgi_middleware(  # type: ignore[attr-defined]
    Documented, paths=tuple(_BODIES), keyed=_API_KEY is not None
)
