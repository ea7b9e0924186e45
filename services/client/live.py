"""The gateway's live feed (`GET /v1/events`) as an endless async iterator.

The gateway keeps no event history, so after any gap the caller must refetch what it
shows. The stream therefore reports its own connection state as events, in order with
the gateway's: `disconnected` when the connection is lost (with the error), then, once a
new connection is up, `reconnected`, which is the caller's cue to refetch. The gateway's
`resync` means the same thing. Reconnection backs off exponentially up to `max_backoff`;
a rejected key (401/403) is not retried, since waiting will not fix it.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import Any

import httpx
from httpx_sse import SSEError, aconnect_sse

from services.client.errors import ApiError, Forbidden, Unauthorized, error_from_response
from services.contract.events import EventName, Payload, parse_payload

CONNECTED = "connected"
RECONNECTED = "reconnected"
DISCONNECTED = "disconnected"


@dataclass(frozen=True)
class LiveEvent:
    """`name` is the gateway's event name (`EventName`) or one of the client's own
    `connected` / `reconnected` / `disconnected`; `payload` is `data` as the contract's
    model (`RunChanged`, `StepChanged`, `ApprovalChanged`, `QueueStats`), None for an
    event without one or one this client does not understand."""

    name: str
    data: dict[str, Any] = field(default_factory=dict)
    payload: Payload | None = None


async def live_events(
    http: httpx.AsyncClient,
    *,
    initial_backoff: float = 0.25,
    max_backoff: float = 5.0,
    read_timeout: float = 45.0,
) -> AsyncGenerator[LiveEvent, None]:
    """A generator, so a caller done with the feed can `aclose()` it (or use
    `contextlib.aclosing`) to drop the connection now rather than when it is collected."""
    backoff = initial_backoff
    connected_before = False
    timeout = httpx.Timeout(10.0, read=read_timeout)
    while True:
        try:
            async with aconnect_sse(http, "GET", "/v1/events", timeout=timeout) as source:
                if source.response.status_code != 200:
                    await source.response.aread()
                    error = error_from_response(source.response)
                    if isinstance(error, Unauthorized | Forbidden):
                        raise error
                    raise _Retry(str(error))
                async for sse in source.aiter_sse():
                    if sse.event == EventName.READY:
                        backoff = initial_backoff
                        yield LiveEvent(RECONNECTED if connected_before else CONNECTED)
                        connected_before = True
                        continue
                    data = _data(sse.data)
                    yield LiveEvent(sse.event, data, parse_payload(sse.event, data))
            raise _Retry("the gateway closed the stream")
        except (httpx.HTTPError, SSEError, _Retry) as exc:
            yield LiveEvent(DISCONNECTED, {"error": str(exc) or type(exc).__name__})
        except ApiError:
            raise
        await asyncio.sleep(backoff)
        backoff = min(backoff * 2, max_backoff)


class _Retry(Exception):
    pass


def _data(data: str) -> dict[str, Any]:
    try:
        value = json.loads(data) if data else {}
    except ValueError:
        return {"raw": data}
    return value if isinstance(value, dict) else {"value": value}
