"""Local traffic router: one port in front of the stable and canary `bentoml serve` processes.

Splits by weight, sticky on the request key (`request_id` in the body, else the
`X-Request-Key` header), or in shadow mode answers from stable and mirrors to the canary.
A canary's 5xx or dead connection is retried once on stable.
Counts per variant at `/router/metrics`; weights change only through the authenticated
`POST /router/weights`. It is the local stand-in for what Argo Rollouts does in a cluster.

No input makes it answer 5xx: a body past the limit is a 413 here, anything else goes to the
service, whose 4xx passes back; 502 means an upstream is down, never the request.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import uuid
from dataclasses import dataclass, field
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

FORWARD_HEADERS = ("content-type", "x-api-key", "authorization", "x-request-key", "x-request-id")
MAX_BODY_BYTES = 2_000_000  # the service's default `serving.max_body_bytes`


class _TooLarge(Exception):
    pass


async def _body(request: Request, limit: int) -> bytes:
    """The whole body, refused past `limit` however it is sent (declared or chunked)."""
    declared = request.headers.get("content-length", "")
    if declared.isascii() and declared.isdigit() and int(declared) > limit:
        raise _TooLarge
    chunks, seen = [], 0
    async for chunk in request.stream():
        seen += len(chunk)
        if seen > limit:
            raise _TooLarge
        chunks.append(chunk)
    return b"".join(chunks)


@dataclass
class Split:
    stable: str
    canary: str | None = None
    weight: int = 0  # percent of keys sent to the canary
    mode: str = "canary"  # or "shadow"
    counts: dict[str, dict[str, int]] = field(default_factory=dict)

    def variant(self, key: str) -> str:
        if self.canary is None or self.mode == "shadow" or self.weight <= 0:
            return "stable"
        bucket = int.from_bytes(hashlib.sha256(key.encode()).digest()[:4], "big") % 100
        return "canary" if bucket < self.weight else "stable"

    def count(self, variant: str, status: int) -> None:
        per = self.counts.setdefault(variant, {})
        per[str(status)] = per.get(str(status), 0) + 1


def request_key(body: bytes, headers: dict[str, str]) -> str:
    """The sticky key; any body the service will refuse (not JSON, not UTF-8, nested past the
    parser's depth, not an object) just gets a random key, and the service's 4xx passes back."""
    if "x-request-key" in headers:
        return headers["x-request-key"]
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError):  # JSONDecodeError and UnicodeDecodeError are both
        payload = None
    rid = payload.get("request_id") if isinstance(payload, dict) else None
    return rid if isinstance(rid, str) and rid else uuid.uuid4().hex


def create_app(split: Split, admin_token: str, max_body_bytes: int = MAX_BODY_BYTES) -> Starlette:
    client = httpx.AsyncClient(timeout=30)

    async def forward(base: str, path: str, body: bytes, headers: dict[str, str]) -> httpx.Response:
        # Values go on as the bytes that came in (Starlette decodes them as latin-1): a byte
        # httpx cannot encode as ASCII must reach the service, which answers its 400.
        sent = [
            (k.encode(), v.encode("latin-1")) for k, v in headers.items() if k in FORWARD_HEADERS
        ]
        return await client.post(f"{base}{path}", content=body, headers=sent)

    async def proxy(request: Request) -> Response:
        try:
            body = await _body(request, max_body_bytes)
        except _TooLarge:
            return JSONResponse(
                {"error": f"body larger than {max_body_bytes} bytes"}, status_code=413
            )
        headers = {k.lower(): v for k, v in request.headers.items()}
        # Stable and the shadow log the same id for the same request, as behind Envoy, so the
        # controller can pair their answers.
        headers.setdefault("x-request-id", uuid.uuid4().hex)
        variant = split.variant(request_key(body, headers))
        target = split.canary if variant == "canary" and split.canary else split.stable
        if split.mode == "shadow" and split.canary:
            shadow_base: str = split.canary

            async def mirror() -> None:
                try:
                    answer = await forward(shadow_base, request.url.path, body, headers)
                    split.count("shadow", answer.status_code)
                except httpx.HTTPError:
                    split.count("shadow", 502)

            asyncio.get_running_loop().create_task(mirror())
        try:
            answer = await forward(target, request.url.path, body, headers)
        except httpx.HTTPError:
            answer = None
        if variant == "canary" and (answer is None or answer.status_code >= 500):
            # The canary's failure is counted (its own /metrics feed the error gate) and the
            # client gets stable's answer: a broken canary costs clients nothing.
            split.count("canary", 502 if answer is None else answer.status_code)
            variant = "stable"
            try:
                answer = await forward(split.stable, request.url.path, body, headers)
            except httpx.HTTPError:
                answer = None
        if answer is None:
            split.count(variant, 502)
            return JSONResponse({"error": f"{variant} upstream unavailable"}, status_code=502)
        split.count(variant, answer.status_code)
        return Response(
            answer.content,
            status_code=answer.status_code,
            media_type=answer.headers.get("content-type"),
            headers={"x-shipyard-variant": variant},
        )

    async def weights(request: Request) -> Response:
        given = request.headers.get("authorization", "").removeprefix("Bearer ")
        if not hmac.compare_digest(given.encode(), admin_token.encode()):
            return JSONResponse({"error": "admin token required"}, status_code=401)
        try:
            update: dict[str, Any] = json.loads(await _body(request, 10_000))
            if not isinstance(update, dict):
                raise TypeError
            weight = int(update.get("weight", split.weight))
            mode = str(update.get("mode", split.mode))
        except (ValueError, TypeError, RecursionError, OverflowError, _TooLarge):
            return JSONResponse({"error": "expected {weight: 0..100, mode}"}, status_code=400)
        if not 0 <= weight <= 100 or mode not in ("canary", "shadow"):
            return JSONResponse(
                {"error": "weight must be 0..100, mode canary|shadow"}, status_code=400
            )
        split.weight, split.mode = weight, mode
        if "canary" in update:
            split.canary = update["canary"] or None
        if "stable" in update:
            split.stable = str(update["stable"])
        return JSONResponse(state())

    def state() -> dict[str, Any]:
        return {
            "stable": split.stable,
            "canary": split.canary,
            "weight": split.weight,
            "mode": split.mode,
            "counts": split.counts,
        }

    async def metrics(_: Request) -> Response:
        lines = ["# TYPE shipyard_router_requests_total counter"]
        for variant, per in sorted(split.counts.items()):
            for status, n in sorted(per.items()):
                lines.append(
                    f'shipyard_router_requests_total{{variant="{variant}",status="{status}"}} {n}'
                )
        lines.append(f"shipyard_router_canary_weight {split.weight}")
        return PlainTextResponse("\n".join(lines) + "\n")

    async def status(_: Request) -> Response:
        return JSONResponse(state())

    async def livez(_: Request) -> Response:
        return PlainTextResponse("ok")

    return Starlette(
        routes=[
            Route("/livez", livez),
            Route("/router/metrics", metrics),
            Route("/router/status", status),
            Route("/router/weights", weights, methods=["POST"]),
            Route("/{path:path}", proxy, methods=["POST"]),
        ]
    )
