"""ASGI middleware in front of the service: headers, API key and body size, before any parsing.

The whole body is read here, up to the limit, before the app sees it: a size error raised
inside BentoML's endpoint would come back as its 500, so none is raised there.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

OPEN_PATHS = ("/livez", "/readyz", "/healthz", "/metrics")


async def _reply(send: Send, status: int, error: str) -> None:
    body = json.dumps({"error": error}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _drain(receive: Receive, cap: int) -> None:
    """Read and drop a refused body (up to `cap`), so the client can read our 413 instead of
    hitting a closed socket mid-upload."""
    read = 0
    while read <= cap:
        message = await receive()
        read += len(message.get("body", b""))
        if not message.get("more_body", False):
            return


class Guard:
    """401 without the configured key (health and metrics stay open); 413 past the size limit."""

    def __init__(self, app: ASGIApp, api_key: str | None, max_body_bytes: int) -> None:
        self.app = app
        self.api_key = api_key or None
        self.max_body_bytes = max_body_bytes

    def _authorized(self, scope: Scope, headers: dict[str, str]) -> bool:
        """`X-API-Key: <key>` or `Authorization: Bearer <key>` (any case), nothing else."""
        if self.api_key is None or scope.get("path", "") in OPEN_PATHS:
            return True
        given = []
        if "x-api-key" in headers:
            given.append(headers["x-api-key"])
        scheme, _, credential = headers.get("authorization", "").strip().partition(" ")
        if scheme.lower() == "bearer" and credential.strip():
            given.append(credential.strip())
        expected = self.api_key.encode()
        # Every candidate is compared, so timing does not tell which header was right.
        return any([hmac.compare_digest(g.encode(), expected) for g in given])

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = _decoded(scope.get("headers", []))
        if headers is None:
            await _reply(send, 400, "a request header is not valid UTF-8")
            return
        if not self._authorized(scope, headers):
            await _reply(send, 401, "missing or wrong API key")
            return
        declared = headers.get("content-length")
        if declared is not None and not (declared.isascii() and declared.isdigit()):
            await _reply(send, 400, f"Content-Length {declared[:20]!r} is not a byte count")
            return
        if declared is not None and int(declared) > self.max_body_bytes:
            await _drain(receive, 10 * self.max_body_bytes)
            await _reply(send, 413, f"body larger than {self.max_body_bytes} bytes")
            return
        chunks, seen = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            chunks.append(message.get("body", b""))
            seen += len(chunks[-1])
            if seen > self.max_body_bytes:
                if message.get("more_body", False):
                    await _drain(receive, 10 * self.max_body_bytes)
                await _reply(send, 413, f"body larger than {self.max_body_bytes} bytes")
                return
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:  # after the body, the app only waits for a disconnect
                return await receive()
            replayed = True
            return {"type": "http.request", "body": b"".join(chunks), "more_body": False}

        await self.app(scope, replay, send)


def _decoded(raw: Any) -> dict[str, str] | None:
    """Lower-cased header names to values; None when any byte is not UTF-8."""
    try:
        return {k.decode().lower(): v.decode() for k, v in raw}
    except UnicodeDecodeError:
        return None
