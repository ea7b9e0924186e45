"""The worker's callback slots, shared out project by project.

A worker holds up to `max_in_flight` runs, but only a few callbacks are in flight at once
(`gateway_client._CONCURRENT_CALLBACKS`); the rest wait for a slot. Waiting first come,
first served put one project's new run behind every callback of another project's 255
runs: a quiet project's claim waited about 1.9 s behind a flood (`bench/fairness.py`),
after fair dispatch had already brought it to the front of the stream. So the waiters
queue per project and a freed slot goes to the next project in turn.

Within a project, the callbacks of runs already claimed go before new claims. First come,
first served, a read of 64 jobs queued 64 claims ahead of the final reports of the runs
they followed, so runs finished in bursts every few seconds, the worker stayed full in
between and read nothing — a quiet project's job waited in the stream for the next
burst. Finishing first keeps runs short and the worker reading steadily, and wastes no
slot: a claim waits only while a settling callback of its project waits.

The project is the job's, set once by the consumer when it starts a job (`serving`), so
every callback made on the job's behalf — in its task or in one it starts, such as the
lease heartbeat — takes its project's turn without each call site passing it along.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import OrderedDict, deque
from collections.abc import AsyncIterator
from contextvars import ContextVar

# The project whose job the current task works for; "" for work of no project (the
# catalogue report, a malformed job), which takes its turn as one more project.
serving: ContextVar[str] = ContextVar("serving", default="")


class _Queue:
    """One project's waiting callbacks: those of claimed runs, then claims."""

    def __init__(self) -> None:
        self.settling: deque[asyncio.Future[None]] = deque()
        self.starting: deque[asyncio.Future[None]] = deque()

    def __bool__(self) -> bool:
        return bool(self.settling or self.starting)

    def next(self) -> asyncio.Future[None]:
        return (self.settling or self.starting).popleft()

    def forget(self, handed: asyncio.Future[None]) -> None:
        for waiting in (self.settling, self.starting):
            with contextlib.suppress(ValueError):
                waiting.remove(handed)


class FairSlots:
    def __init__(self, slots: int) -> None:
        self._free = slots
        # Each project with callbacks waiting, in the order their turns come.
        self._waiting: OrderedDict[str, _Queue] = OrderedDict()

    @contextlib.asynccontextmanager
    async def held(self, *, claim: bool = False) -> AsyncIterator[None]:
        """Hold a slot for the duration, waiting for the current project's turn; a
        `claim` (starting a run) waits behind its project's runs already going."""
        if self._free > 0 and not self._waiting:
            self._free -= 1
        else:
            await self._wait(serving.get(), claim)
        try:
            yield
        finally:
            self._hand_on()

    async def _wait(self, project: str, claim: bool) -> None:
        handed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        queue = self._waiting.setdefault(project, _Queue())
        (queue.starting if claim else queue.settling).append(handed)
        try:
            await handed
        except asyncio.CancelledError:
            if handed.done() and not handed.cancelled():
                # The slot was handed over as the wait was cancelled: pass it on.
                self._hand_on()
            else:
                queue.forget(handed)
                if not queue and self._waiting.get(project) is queue:
                    del self._waiting[project]
            raise

    def _hand_on(self) -> None:
        """Give the freed slot to the next project in turn, which then goes last."""
        while self._waiting:
            project, queue = next(iter(self._waiting.items()))
            handed = queue.next()
            if queue:
                self._waiting.move_to_end(project)
            else:
                del self._waiting[project]
            if not handed.done():
                handed.set_result(None)
                return
        self._free += 1
