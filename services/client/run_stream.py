"""One run's stream (`GET /v1/runs/{id}/stream`) as an async iterator of typed events.

The stream ends with the run (`RunEnded`). A connection lost before then is opened
again with the last event's id (`Last-Event-ID`), so the caller sees every event once
and no gap; reconnection backs off exponentially up to `max_backoff`. An answer other
than 200 (a rejected key, a run that is not there) is raised as the client's error.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncGenerator

import httpx
from httpx_sse import SSEError, aconnect_sse

from services.client.errors import error_from_response
from services.contract.api import Run, Step
from services.contract.run_stream import RunEnded, RunStreamEvent, StepRecorded, TokenDelta

RunStreamItem = TokenDelta | StepRecorded | RunEnded


async def stream_run(
    http: httpx.AsyncClient,
    run_id: uuid.UUID | str,
    *,
    initial_backoff: float = 0.25,
    max_backoff: float = 5.0,
    read_timeout: float = 45.0,
) -> AsyncGenerator[RunStreamItem, None]:
    """A generator, so a caller done early can `aclose()` it to drop the connection."""
    last: str | None = None
    backoff = initial_backoff
    timeout = httpx.Timeout(10.0, read=read_timeout)
    while True:
        headers = {} if last is None else {"Last-Event-ID": last}
        try:
            async with aconnect_sse(
                http, "GET", f"/v1/runs/{run_id}/stream", headers=headers, timeout=timeout
            ) as source:
                if source.response.status_code == 204:
                    return
                if source.response.status_code != 200:
                    await source.response.aread()
                    raise error_from_response(source.response)
                async for sse in source.aiter_sse():
                    item = _item(sse.event, sse.data)
                    if item is None:
                        continue
                    last, backoff = sse.id, initial_backoff
                    yield item
                    if isinstance(item, RunEnded):
                        return
        except (httpx.HTTPError, SSEError):
            pass
        await asyncio.sleep(backoff)
        backoff = min(backoff * 2, max_backoff)


def _item(name: str, data: str) -> RunStreamItem | None:
    """The event as its model; None for one this client does not know (a newer gateway's)."""
    if name == RunStreamEvent.TOKEN:
        return TokenDelta.model_validate_json(data)
    if name == RunStreamEvent.STEP:
        return StepRecorded(step=Step.model_validate(json.loads(data)))
    if name == RunStreamEvent.END:
        return RunEnded(run=Run.model_validate(json.loads(data)))
    return None
