"""Pins what the service relies on in BentoML's internal CorkDispatcher.

The public `batchable=True` API cannot keep the service's request shape: a batchable method
takes exactly one argument, the batch itself ("Batch inference function only accept one
argument", `_bentoml_impl/server/app.py`), so `/predict` could take neither one record of
named fields nor a `request_id` beside it. The service therefore wraps its own callback in
the dispatcher that API is built on. This test fails first when an upgrade changes it.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
from typing import Any

from bentoml._internal.marshal.dispatcher import CorkDispatcher


def test_the_dispatcher_keeps_the_keywords_the_service_passes() -> None:
    params = inspect.signature(CorkDispatcher.__init__).parameters
    assert {"max_latency_in_ms", "max_batch_size", "fallback", "get_batch_size"} <= set(params)


def test_concurrent_calls_share_one_model_call_and_get_their_own_answers() -> None:
    calls: list[list[list[int]]] = []
    gate = threading.Event()

    def model(groups: list[list[int]]) -> list[list[int]]:
        gate.wait(5)  # the first call holds the model while the others queue behind it
        calls.append(groups)
        return [[2 * x for x in group] for group in groups]

    async def main() -> list[list[int]]:
        dispatch: Any = CorkDispatcher(
            max_latency_in_ms=10_000, max_batch_size=100, fallback=lambda: None, get_batch_size=len
        )(model)  # type: ignore[arg-type]
        tasks = [asyncio.ensure_future(dispatch([i, i + 100])) for i in range(20)]
        await asyncio.sleep(0.5)
        gate.set()
        return list(await asyncio.gather(*tasks))

    answers = asyncio.run(main())
    assert answers == [[2 * i, 2 * (i + 100)] for i in range(20)]  # each its own, in order
    assert len(calls) < 20 and max(len(c) for c in calls) > 1  # batched, not one by one
    assert all(sum(len(g) for g in c) <= 100 for c in calls)  # never past max_batch_size
