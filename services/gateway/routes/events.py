"""`/v1/events`: a Server-Sent Events stream of run, step, approval and queue changes.

Events carry ids and states, not contents; a client fetches what it shows through the
rest of the API. There are no event ids to resume from: on `ready` (the first event of
every connection, reconnections included) and on `resync` a client refetches the state it
shows, which is simpler and cannot miss a change that happened while it was away.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from quart import Blueprint, Response, g, make_response
from quart_schema import tag

from services.contract.events import EventName
from services.gateway.auth import READERS, require_role
from services.gateway.events import CLOSED, Event, event_hub

blueprint = Blueprint("events", __name__, url_prefix="/v1/events")
require_role(blueprint, *READERS)

_HEARTBEAT = b": heartbeat\n\n"


@blueprint.get("")
@tag(["events"])
async def stream_events() -> Response:
    """`text/event-stream` of `run`, `step`, `approval`, `queue` and `resync` events.

    The stream opens with `ready`; a comment line is sent every 15 s of silence.
    """
    hub = event_hub()
    subscription = hub.subscribe(g.principal)

    async def body() -> AsyncIterator[bytes]:
        try:
            yield Event(EventName.READY).encode()
            while True:
                event = await subscription.next(hub.heartbeat_seconds)
                if event is None:
                    yield _HEARTBEAT
                elif event is CLOSED:
                    return
                else:
                    yield event.encode()
        finally:
            hub.unsubscribe(subscription)

    response = await make_response(
        body(),
        200,
        {
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",
        },
    )
    assert isinstance(response, Response)
    response.timeout = None
    return response
