"""The BentoML prediction service for one packaged model version.

`shipyard package` writes the serving spec next to a two-line entry module inside the Bento;
`shipyard serve` runs it with `bentoml serve`. The model is read from the BentoML model store
with skops and the allow-list, never unpickled.

Both endpoints feed BentoML's adaptive batching dispatcher (the CorkDispatcher behind
`batchable=True` APIs), so concurrent single-record requests are scored in one model call
while each endpoint keeps its own request shape.
"""

import logging
import os
import re
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import bentoml
import numpy as np
import pandas as pd
from bentoml._internal.marshal.dispatcher import CorkDispatcher
from bentoml.exceptions import InternalServerError, ServiceUnavailable

from shipyard.models import storage
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


class _QuietValidation(logging.Filter):
    """Drop BentoML's ERROR traceback for a request that failed validation: it is a 400,
    reported by `_rejected` in one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        from pydantic import ValidationError

        kind = record.exc_info[0] if record.exc_info else None
        return not (kind is not None and issubclass(kind, ValidationError))


logging.getLogger("bentoml._internal.server.http_app").addFilter(_QuietValidation())


class Metered:
    """Counts every response by status and times it, labelled by model version."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope.get("path") == "/metrics":
            await self.app(scope, receive, send)
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


def _proxy_id(ctx: bentoml.Context) -> str | None:
    """The proxy's `X-Request-Id` (Envoy's): the same on a mirrored copy."""
    value = ctx.request.headers.get("x-request-id", "")
    return value if _PROXY_ID.fullmatch(value) else None


def _overloaded() -> Any:
    raise ServiceUnavailable("overloaded: the batch queue is past its latency budget")


@bentoml.service(
    name=SPEC.model_name,
    traffic={"timeout": 30},
    logging={"access": {"enabled": False}},  # the prediction log and metrics cover requests
)
class PredictionService:
    model_ref = bentoml.models.BentoModel(SPEC.bento_model)

    def __init__(self) -> None:
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
        self._warm_up()
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
        frame = pd.DataFrame([row] * 8, columns=self.fields)
        frame = frame.astype({f: _DTYPES[t] for f, t in SPEC.fields.items()})
        for size in (1, 8, 1):
            self.model.predict_proba(frame.iloc[:size])

    def __is_ready__(self) -> bool:
        return self.ready

    @bentoml.on_shutdown
    def _flush_log(self) -> None:
        """A normal stop writes every pending record; only a kill can lose the last batch."""
        self.log.close()

    def _predict_many(self, groups: list[list[dict[str, Any]]]) -> list[np.ndarray]:
        """One model call for every request the dispatcher gathered; scores split back."""
        flat = [row for group in groups for row in group]
        frame = pd.DataFrame(flat, columns=self.fields)
        frame = frame.astype({f: _DTYPES[t] for f, t in SPEC.fields.items()})
        scores = self.model.predict_proba(frame)[:, 1]
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
        self, records: list[Any], request_id: str | None, ctx: bentoml.Context
    ) -> list[Prediction]:
        rows = [r.model_dump() for r in records]
        scores = await self._scores(rows)
        base = request_id or _proxy_id(ctx) or uuid.uuid4().hex
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
        return (await self._score([features], request_id, ctx))[0]

    @bentoml.api
    async def predict_batch(
        self,
        records: Batch,  # type: ignore[valid-type]
        ctx: bentoml.Context,
        request_id: RequestId | None = None,
    ) -> BatchPrediction:
        """Score a batch of records; request ids are `<request_id>-<index>`."""
        return BatchPrediction(predictions=await self._score(records, request_id, ctx))


_API_KEY = os.environ.get("SHIPYARD_API_KEY") or None
_BODIES = {  # path -> the top-level fields of its input, as the signatures above say
    "/predict": frozenset({"features", "request_id"}),
    "/predict_batch": frozenset({"records", "request_id"}),
}
# Outermost first: metering sees the guard's refusals; the guard keeps the document private.
PredictionService.add_asgi_middleware(Metered)  # type: ignore[attr-defined]
PredictionService.add_asgi_middleware(  # type: ignore[attr-defined]
    Guard,
    api_key=_API_KEY,
    max_body_bytes=SPEC.max_body_bytes,
    bodies=_BODIES,
    on_reject=_rejected,
)
PredictionService.add_asgi_middleware(  # type: ignore[attr-defined]
    Documented, paths=tuple(_BODIES), keyed=_API_KEY is not None
)
