"""The service's OpenAPI document, corrected to describe what the service really sends.

BentoML documents its 400 as `InvalidArgument` with a string `detail`, but sends a list of
`{loc, msg, type}`; it knows nothing of the guard's 401, 413 and 415, of its own 503 when the
batch queue is full, or that the inputs refuse unknown top-level fields. `Documented` patches
`/docs.json` on its way out, so client generators and schemathesis read the truth.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable
from typing import Any

from shipyard.serving.guard import ASGIApp, Message, Receive, Scope, Send

DOC_PATH = "/docs.json"
_DETAIL = {
    "type": "object",
    "required": ["loc", "msg", "type"],
    "properties": {
        "loc": {"type": "array", "items": {"anyOf": [{"type": "string"}, {"type": "integer"}]}},
        "msg": {"type": "string"},
        "type": {"type": "string"},
    },
}
ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {"type": "string"},
        "detail": {"type": "array", "items": _DETAIL},
    },
}
_REFUSALS = {
    "401": "Missing or wrong API key (X-API-Key, or Authorization: Bearer)",
    "413": "Body larger than the service's limit, however it was sent",
    "415": "Content-Type is not application/json",
    "503": "Overloaded: the batch queue is past its latency budget; retry later",
}


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def patch(doc: dict[str, Any], paths: Iterable[str], keyed: bool) -> dict[str, Any]:
    """A copy of BentoML's document with the error bodies and refusals as sent."""
    out = copy.deepcopy(doc)
    schemas = out.setdefault("components", {}).setdefault("schemas", {})
    schemas["InvalidArgument"] = {**ERROR, "title": "InvalidArgument", "description": "Bad Request"}
    schemas["Refused"] = {**ERROR, "title": "Refused"}
    for path in paths:
        operation = out["paths"][path]["post"]
        for code, text in _REFUSALS.items():
            if code == "401" and not keyed:
                continue
            content = {"application/json": {"schema": _ref("Refused")}}
            operation["responses"][code] = {"description": text, "content": content}
        # The inline copy drops `null` from optional fields; the component keeps it.
        name = f"{operation['x-bentoml-name']}__Input"
        schemas[name]["additionalProperties"] = False
        content = {"application/json": {"schema": _ref(name)}}
        operation["requestBody"] = {"required": True, "content": content}
        if keyed:
            operation["security"] = [{"apiKey": []}, {"bearer": []}]
    if keyed:
        out["components"]["securitySchemes"] = {
            "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
            "bearer": {"type": "http", "scheme": "bearer"},
        }
    return out


class Documented:
    """Serve `patch(...)` of the app's own `/docs.json`; every other request passes as is."""

    def __init__(self, app: ASGIApp, paths: Iterable[str], keyed: bool) -> None:
        self.app, self.paths, self.keyed = app, tuple(paths), keyed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path") != DOC_PATH:
            await self.app(scope, receive, send)
            return
        held: list[Message] = []

        async def hold(message: Message) -> None:
            held.append(message)

        await self.app(scope, receive, hold)
        start = next(m for m in held if m["type"] == "http.response.start")
        body = b"".join(m.get("body", b"") for m in held if m["type"] == "http.response.body")
        if start["status"] == 200:
            body = json.dumps(patch(json.loads(body), self.paths, self.keyed)).encode()
        headers = [(k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"]
        headers.append((b"content-length", str(len(body)).encode()))
        await send({**start, "headers": headers})
        await send({"type": "http.response.body", "body": body})
