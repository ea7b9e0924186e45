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

A run's stream (`run_stream`) watches its run the same way, woken by any change to the
run or its steps rather than only by its settling.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Iterable, Iterator
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
        self._watching: dict[uuid.UUID, set[asyncio.Event]] = {}
        self.closing = False
        """Set as the gateway stops: watchers end instead of reading again."""

    def notice(self, name: str, data: dict[str, object]) -> None:
        """Wake the waiters a notification concerns: a run's settling, or a `resync`
        (notifications were lost, so anyone's run may have settled unheard)."""
        if name == EventName.RESYNC:
            for registry in (self._waiting, self._watching):
                for events in registry.values():
                    _wake(events)
            return
        if name not in (EventName.RUN, EventName.STEP):
            return
        try:
            run_id = uuid.UUID(str(data["run_id"]))
        except (KeyError, ValueError):
            return
        _wake(self._watching.get(run_id, ()))
        if name == EventName.RUN and _settled_status(data.get("status")):
            _wake(self._waiting.get(run_id, ()))

    @contextmanager
    def _registered(self, run_id: uuid.UUID) -> Iterator[asyncio.Event]:
        RUN_WAITERS.inc()
        try:
            with _entry(self._waiting, run_id) as event:
                yield event
        finally:
            RUN_WAITERS.dec()

    def close_watchers(self) -> None:
        self.closing = True
        for events in self._watching.values():
            _wake(events)

    @contextmanager
    def watching(self, run_id: uuid.UUID) -> Iterator[asyncio.Event]:
        """An event set on every change to the run or its steps (and on `resync`); the
        watcher clears it before it reads."""
        with _entry(self._watching, run_id) as event:
            yield event

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


def _settled_status(status: object) -> bool:
    try:
        return settled(RunStatus(str(status)))
    except ValueError:
        return False


def _wake(events: Iterable[asyncio.Event]) -> None:
    for event in events:
        event.set()


@contextmanager
def _entry(
    registry: dict[uuid.UUID, set[asyncio.Event]], run_id: uuid.UUID
) -> Iterator[asyncio.Event]:
    event = asyncio.Event()
    registry.setdefault(run_id, set()).add(event)
    try:
        yield event
    finally:
        events = registry[run_id]
        events.discard(event)
        if not events:
            del registry[run_id]
