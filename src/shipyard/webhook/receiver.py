"""The webhook receiver as an ASGI app: deliveries judged before their body is read.

`Content-Length` is checked first (missing, negative, not digits: 400; chunked: 400; over
`MAX_BODY`: 413), so no request can make it read more than it will accept. Then the
signature and the shape; then the action, once per delivery id, off the event loop. A
failed action is a 502, which MLflow retries with the same delivery id; no request ever
gets a dropped connection, and every answer is one progress line and a count by status on
`GET /metrics` (`shipyard_webhook_deliveries_total{code}`), which the alert rules watch.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, generate_latest
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from shipyard.artifacts import progress
from shipyard.errors import ShipyardError
from shipyard.webhook.delivery import AliasEvent, Rejected, deliver_once, verify

MAX_BODY = 1_000_000
Action = Callable[[AliasEvent], str]
# Alertmanager's notification (body, Authorization header) -> a line per alert (`alerts`).
AlertAction = Callable[[bytes, str | None], list[str]]


class _TooLarge(Exception):
    pass


def _answer(status: int, message: str) -> Response:
    progress("webhook", f"{status} {message}")
    return JSONResponse({"status": message}, status_code=status)


async def _body(request: Request) -> bytes | Response:
    """The body, or the refusal that comes before reading it."""
    if "transfer-encoding" in request.headers:
        return _answer(400, "Transfer-Encoding is not accepted; send Content-Length")
    declared = request.headers.get("content-length")
    if declared is None or not (declared.isascii() and declared.isdigit()):
        return _answer(400, "Content-Length is missing or not a byte count")
    if int(declared) > MAX_BODY:
        return _answer(413, f"body larger than {MAX_BODY} bytes")
    chunks, seen = [], 0
    async for chunk in request.stream():
        seen += len(chunk)
        if seen > MAX_BODY:
            return _answer(413, f"body larger than {MAX_BODY} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def create_app(
    secret: str, act: Action, max_age: float = 300, on_alerts: AlertAction | None = None
) -> Starlette:
    """POST /alerts: Alertmanager's notifications (`on_alerts`); POST any other path: an
    MLflow delivery; GET /livez: alive; GET /metrics: answers by status."""
    registry = CollectorRegistry()  # the app's own: two receivers in one process never mix
    answers = Counter(
        "shipyard_webhook_deliveries",
        "Deliveries answered, by HTTP status (5xx: the action failed or a bug)",
        ["code"],
        registry=registry,
    )

    def counted(handler: Callable[[Request], Awaitable[Response]]) -> Callable[..., Any]:
        async def endpoint(request: Request) -> Response:
            response = await handler(request)
            answers.labels(code=str(response.status_code)).inc()
            return response

        return endpoint

    async def judge(request: Request) -> Response:
        try:
            body = await _body(request)
            if isinstance(body, Response):
                return body
            delivery = verify(secret, dict(request.headers.items()), body, time.time(), max_age)
            event = AliasEvent.parse(body)
            if event is None:
                return _answer(200, "event ignored")
            outcome = await run_in_threadpool(deliver_once, delivery, lambda: act(event))
            return _answer(200, outcome)
        except Rejected as err:
            return _answer(err.status, str(err))
        except ShipyardError as err:  # the action failed: 502, and MLflow retries
            return _answer(502, str(err))
        except Exception as err:  # a bug must still answer, never drop the connection
            return _answer(500, f"internal error: {type(err).__name__}")

    async def alerted(request: Request) -> Response:
        try:
            if on_alerts is None:
                raise Rejected(404, "alerts: this receiver takes no alerts")
            body = await _body(request)
            if isinstance(body, Response):
                return body
            auth = request.headers.get("authorization")
            lines = await run_in_threadpool(on_alerts, body, auth)
            return _answer(200, "alerts: " + ("; ".join(lines) or "no alert"))
        except Rejected as err:
            return _answer(err.status, str(err))
        except ShipyardError as err:  # the action failed: 502, and Alertmanager retries
            return _answer(502, f"alerts: {err}")
        except Exception as err:
            return _answer(500, f"internal error: {type(err).__name__}")

    async def livez(_: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def metrics(_: Request) -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return Starlette(
        routes=[
            Route("/livez", livez),
            Route("/metrics", metrics),
            Route("/alerts", counted(alerted), methods=["POST"]),
            Route("/{path:path}", counted(judge), methods=["POST"]),
        ]
    )
