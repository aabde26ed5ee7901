"""ASGI middleware in front of the service: headers, API key, body size and strict JSON.

The whole body is read here, up to the limit, before the app sees it: a size error raised
inside BentoML's endpoint would come back as its 500, so none is raised there. On the
prediction paths the body must then be `application/json`, UTF-8, one object with only the
endpoint's fields, no duplicate key, no NaN or Infinity, and shallow: Python's parser keeps
the last of two equal keys and takes `NaN`, so BentoML alone would accept both.

Every 4xx, the guard's own and the app's, is reported once to `on_reject`.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from dataclasses import dataclass
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

OPEN_PATHS = ("/livez", "/readyz", "/healthz", "/metrics")
MAX_DEPTH = 8  # a batch is 3 deep (object, list, record); the parser's own limit is ~1000
# Why a request can be refused: the label of `shipyard_rejected_requests_total`.
REASONS = (
    "header",
    "auth",
    "length",
    "too_large",
    "content_type",
    "json",
    "duplicate_key",
    "depth",
    "shape",
    "unknown_field",
    "validation",
    "other",
)


@dataclass(frozen=True)
class Rejection:
    path: str
    status: int
    reason: str  # one of REASONS
    message: str  # names the field, header or rule


Reporter = Callable[[Rejection], None]
# Answers a checked body itself: (parsed body, lower-cased headers) -> (status, JSON body).
Endpoint = Callable[[dict[str, Any], Mapping[str, str]], Awaitable[tuple[int, bytes]]]


def error_body(message: str, reason: str, loc: tuple[str | int, ...] = ()) -> bytes:
    """The guard's 4xx body, in the shape of BentoML's validation 400 (see `openapi`)."""
    detail = [{"loc": list(loc), "msg": message, "type": reason}]
    return json.dumps({"error": message, "detail": detail}).encode()


async def _reply(send: Send, status: int, body: bytes) -> None:
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


class _Refused(Exception):
    def __init__(self, status: int, reason: str, message: str, loc: tuple[str, ...] = ()):
        super().__init__(message)
        self.status, self.reason, self.message, self.loc = status, reason, message, loc


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _Refused(400, "duplicate_key", f"duplicate key {key[:64]!r}", (key[:64],))
        out[key] = value
    return out


def _no_constant(name: str) -> None:
    raise _Refused(400, "json", f"{name} is not JSON (numbers must be finite)")


def _depth(value: Any) -> int:
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, level)
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, level + 1) for child in children if isinstance(child, dict | list))
    return deepest


def check_body(content_type: str, body: bytes, fields: frozenset[str]) -> dict[str, Any]:
    """The parsed body; raises _Refused unless it is strict JSON, one shallow object of known
    `fields`."""
    media, _, params = content_type.partition(";")
    charset = params.strip().lower().removeprefix("charset=").strip('"') if params else "utf-8"
    if media.strip().lower() != "application/json" or charset != "utf-8":
        given = content_type[:60] or "none"
        raise _Refused(415, "content_type", f"Content-Type must be application/json, not {given}")
    try:
        text = body.decode("utf-8")
        payload = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
    except UnicodeDecodeError:
        raise _Refused(400, "json", "body is not UTF-8") from None
    except RecursionError:
        raise _Refused(400, "depth", f"body nested deeper than {MAX_DEPTH} levels") from None
    except ValueError as err:
        raise _Refused(400, "json", f"body is not JSON: {err}") from None
    if not isinstance(payload, dict):
        raise _Refused(400, "shape", f"body is a JSON {type(payload).__name__}, not an object")
    unknown = sorted(set(payload) - fields)
    if unknown:
        name = unknown[0][:64]
        raise _Refused(400, "unknown_field", f"unknown field {name!r}", (name,))
    if _depth(payload) > MAX_DEPTH:
        raise _Refused(400, "depth", f"body nested deeper than {MAX_DEPTH} levels")
    return payload


def _summary(status: int, body: bytes) -> tuple[str, str]:
    """Reason and one-line message of the app's own 4xx (BentoML's validation 400)."""
    reason = "validation" if status in (400, 422) else "other"
    try:
        answer = json.loads(body)
        first = answer["detail"][0]
        where = ".".join(str(part) for part in first["loc"])
        return reason, f"{where}: {first['msg']}"
    except (ValueError, KeyError, IndexError, TypeError):
        return reason, body[:200].decode("utf-8", "replace")


class Guard:
    """401 without the configured key (health and metrics stay open); 413 past the size limit;
    on `bodies` paths (path -> allowed top-level fields) 415 or 400 unless strict JSON.

    A body path with an `endpoints` entry is answered by that endpoint with the body already
    parsed, and the app behind is not called: the service's fast prediction path.
    """

    def __init__(
        self,
        app: ASGIApp,
        api_key: str | None,
        max_body_bytes: int,
        bodies: Mapping[str, frozenset[str]] | None = None,
        on_reject: Reporter | None = None,
        endpoints: Mapping[str, Endpoint] | None = None,
    ) -> None:
        self.app = app
        self.endpoints = dict(endpoints or {})
        self.api_key = api_key or None
        self.max_body_bytes = max_body_bytes
        self.bodies = dict(bodies or {})
        self.on_reject = on_reject or (lambda rejection: None)

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
        path = str(scope.get("path", ""))
        try:
            body, headers = await self._admit(scope, receive)
        except _Refused as err:
            self.on_reject(Rejection(path, err.status, err.reason, err.message))
            await _reply(send, err.status, error_body(err.message, err.reason, err.loc))
            return
        if body is None:  # the client went away
            return
        if scope.get("method") == "POST" and path in self.bodies:
            try:
                payload = check_body(headers.get("content-type", ""), body, self.bodies[path])
            except _Refused as err:
                self.on_reject(Rejection(path, err.status, err.reason, err.message))
                await _reply(send, err.status, error_body(err.message, err.reason, err.loc))
                return
            if path in self.endpoints:
                status, answer = await self.endpoints[path](payload, headers)
                if 400 <= status < 500:
                    self.on_reject(Rejection(path, status, *_summary(status, answer)))
                await _reply(send, status, answer)
                return
        await self.app(scope, _replay(body, receive), self._watch(path, send))

    async def _admit(self, scope: Scope, receive: Receive) -> tuple[bytes | None, dict[str, str]]:
        """Headers, key and size judged; the whole body read. Raises _Refused."""
        headers = _decoded(scope.get("headers", []))
        if headers is None:
            raise _Refused(400, "header", "a request header is not valid UTF-8")
        if not self._authorized(scope, headers):
            raise _Refused(401, "auth", "missing or wrong API key")
        declared = headers.get("content-length")
        if declared is not None and not (declared.isascii() and declared.isdigit()):
            raise _Refused(400, "length", f"Content-Length {declared[:20]!r} is not a byte count")
        too_large = _Refused(413, "too_large", f"body larger than {self.max_body_bytes} bytes")
        if declared is not None and int(declared) > self.max_body_bytes:
            await _drain(receive, 10 * self.max_body_bytes)
            raise too_large
        chunks, seen = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return None, headers
            chunks.append(message.get("body", b""))
            seen += len(chunks[-1])
            if seen > self.max_body_bytes:
                if message.get("more_body", False):
                    await _drain(receive, 10 * self.max_body_bytes)
                raise too_large
            if not message.get("more_body", False):
                return b"".join(chunks), headers

    def _watch(self, path: str, send: Send) -> Send:
        """Pass the app's answer on; report it if it is a 4xx (small: buffered to read it)."""
        status, held = [0], []

        async def watched(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = int(message["status"])
            if not 400 <= status[0] < 500:
                await send(message)
                return
            held.append(message)
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                body = b"".join(m.get("body", b"") for m in held[1:])
                reason, text = _summary(status[0], body)
                self.on_reject(Rejection(path, status[0], reason, text))
                for item in held:
                    await send(item)

        return watched


def _replay(body: bytes, receive: Receive) -> Receive:
    replayed = False

    async def replay() -> Message:
        nonlocal replayed
        if replayed:  # after the body, the app only waits for a disconnect
            return await receive()
        replayed = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay


def _decoded(raw: Any) -> dict[str, str] | None:
    """Lower-cased header names to values; None when any byte is not UTF-8."""
    try:
        return {k.decode().lower(): v.decode() for k, v in raw}
    except UnicodeDecodeError:
        return None
