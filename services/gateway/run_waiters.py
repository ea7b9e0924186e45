"""Requests that wait for a run to settle: `Prefer: wait=N` and `GET /v1/runs/{id}?wait=N`.

An integration that wants the answer should not poll, nor hold an event stream it must
open before the run could end. The gateway already hears every run change from
PostgreSQL (the event hub's listening connection), so a waiting request registers for
its run's changes and reads the run again when one says it has settled — finished, or
parked until a human decides, which no wait would see through. Waiters register before
their first read, so a change between that read and the wait is never missed; when the
listener lost notifications (`resync`) every waiter reads again. A waiter holds one
event and a set entry, nothing per notification, and no database connection while it
waits.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager

from services.contract.api import Run
from services.contract.events import EventName
from services.contract.runs import RunStatus
from services.gateway.metrics import RUN_WAITERS

_SETTLED = frozenset(
    {
        RunStatus.COMPLETED,
        RunStatus.FAILED,
        RunStatus.CANCELLED,
        RunStatus.BUDGET_EXCEEDED,
        RunStatus.WAITING_APPROVAL,
    }
)


def settled(status: RunStatus) -> bool:
    """Whether waiting on longer could change nothing without a human: the run ended, or
    it waits for an approval."""
    return status in _SETTLED


class RunWaiters:
    """Who waits for which run, woken by the hub's notifications."""

    def __init__(self) -> None:
        self._waiting: dict[uuid.UUID, set[asyncio.Event]] = {}

    def notice(self, name: str, data: dict[str, object]) -> None:
        """Wake the waiters a notification concerns: a run's settling, or a `resync`
        (notifications were lost, so anyone's run may have settled unheard)."""
        if name == EventName.RESYNC:
            for events in self._waiting.values():
                for event in events:
                    event.set()
            return
        if name != EventName.RUN:
            return
        try:
            run_id = uuid.UUID(str(data["run_id"]))
            status = RunStatus(str(data["status"]))
        except (KeyError, ValueError):
            return
        if settled(status):
            for event in self._waiting.get(run_id, ()):
                event.set()

    @contextmanager
    def _registered(self, run_id: uuid.UUID) -> Iterator[asyncio.Event]:
        event = asyncio.Event()
        self._waiting.setdefault(run_id, set()).add(event)
        RUN_WAITERS.inc()
        try:
            yield event
        finally:
            RUN_WAITERS.dec()
            events = self._waiting[run_id]
            events.discard(event)
            if not events:
                del self._waiting[run_id]

    async def until_settled(
        self, run_id: uuid.UUID, seconds: float, read: Callable[[], Awaitable[Run]]
    ) -> Run:
        """The run as `read` gives it once it has settled, or after `seconds`."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        with self._registered(run_id) as changed:
            while True:
                # Cleared before the read: a change committed while it is in flight
                # sets the event again, so the wait below returns at once.
                changed.clear()
                run = await read()
                remaining = deadline - loop.time()
                if settled(run.status) or remaining <= 0:
                    return run
                try:
                    async with asyncio.timeout(remaining):
                        await changed.wait()
                except TimeoutError:
                    return await read()
