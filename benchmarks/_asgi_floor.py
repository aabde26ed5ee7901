"""The physical floor for a JSON endpoint here: a bare ASGI app that reads the body and
answers a fixed JSON object, under uvicorn. Nothing a real service does is cheaper."""

from __future__ import annotations

from typing import Any

BODY = b'{"score": 0.01, "decision": false}'


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(BODY))]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": BODY})
