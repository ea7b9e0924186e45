"""Following one run to its end over the live feed, without missing a fast one.

Reading the run and then subscribing leaves a gap: a run that ends in between (the demo
model answers in milliseconds) is never announced, and a caller waiting for its event
waits forever. So the feed is joined first, and the run is read only once the gateway
says the connection is up (`ready`); whatever happens after that arrives as an event.
After a reconnection or a `resync` events may have been lost, so the run is read again.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable

from services.client.errors import GatewayUnavailable
from services.client.live import CONNECTED, RECONNECTED, LiveEvent
from services.contract.api import Run
from services.contract.events import ApprovalChanged, EventName, RunChanged, StepChanged

_REFETCH = frozenset({CONNECTED, RECONNECTED, EventName.RESYNC})


async def follow_run(
    events: AsyncGenerator[LiveEvent, None],
    fetch: Callable[[], Awaitable[Run]],
    run_id: uuid.UUID,
) -> AsyncIterator[Run]:
    """The run each time it may have changed (read through `fetch`), ending with the
    first read that finds it finished."""
    last: Run | None = None
    async with contextlib.aclosing(events):
        async for event in events:
            if not _concerns(event, run_id):
                continue
            try:
                run = await fetch()
            except GatewayUnavailable:
                continue  # the feed says so too, and reading again follows its reconnection
            if run != last:
                yield run
                last = run
            if run.status.terminal:
                return


def _concerns(event: LiveEvent, run_id: uuid.UUID) -> bool:
    if event.name in _REFETCH:
        return True
    payload = event.payload
    return isinstance(payload, RunChanged | StepChanged | ApprovalChanged) and (
        payload.run_id == run_id
    )
