"""Group commit for `POST /v1/runs`: concurrent requests are written together.

A run is accepted only once it is durable, so every `202` waits for a commit, and each
commit waits for a WAL flush. On a slow disk that flush, not the gateway's CPU, caps
intake: one transaction per request topped out at 300-620 runs/s on the two-core
benchmark box, whatever the number of clients. Writing every request that is waiting
in one statement (`store.runs.create_runs`) pays that flush once per batch instead.

The batching is natural, with no timer: a request that finds a writer free is written
at once, alone, so a lone request waits for nothing; requests arriving while the
writers are busy queue, and the next free writer takes everything queued (up to
`batch_max`) in one go. The busier the gateway, the larger the batches. A few writers
(`in_flight`) work at once so one batch's flush overlaps the next batch's statement.

Nothing about a request changes but its company: durability before the answer,
idempotency keys with their sequential meaning, one outbox row and one `run.created`
event (with the request's own id and actor, captured in `NewRun` before the hand-over)
per run. Errors reach the request's own task, so the error handlers answer as before:
an unreachable database fails the batch's requests with the driver's error (503); any
other failure might be one request's fault, so the batch is written again one request
at a time and only the culprit fails.

The queue is bounded (`queue_max`): beyond it `submit` waits for room, so a flood
slows its senders down instead of growing memory; nothing is dropped. `close` writes
what is queued, then fails whatever could not be written in time: no request is left
waiting forever.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
from collections import deque
from dataclasses import dataclass, field

import asyncpg

from services.contract.api import Run
from services.contract.errors import ErrorCode
from services.gateway.db.connections import unreachable
from services.gateway.errors import Conflict, ServiceUnavailable
from services.gateway.store.runs import Created, NewRun, create_runs

log = logging.getLogger(__name__)

_RETRY_AFTER_SECONDS = 5
_CANCEL_GRACE_SECONDS = 1.0


@dataclass(eq=False)
class _Waiting:
    """A submitted request and the future its task awaits."""

    new: NewRun
    future: asyncio.Future[Created] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )

    def settle(self, outcome: Created | Conflict) -> None:
        # A request whose client went away has cancelled its future; its run stands.
        if self.future.done():
            return
        if isinstance(outcome, Conflict):
            self.future.set_exception(outcome)
        else:
            self.future.set_result(outcome)

    def fail(self, exc: BaseException) -> None:
        if not self.future.done():
            self.future.set_exception(exc)


def _shutting_down() -> ServiceUnavailable:
    return ServiceUnavailable(
        "the gateway is shutting down; retry shortly",
        code=ErrorCode.SHUTTING_DOWN,
        retry_after=_RETRY_AFTER_SECONDS,
    )


class RunIntake:
    """Writes submitted runs in batches, a few batches at a time."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        batch_max: int = 256,
        in_flight: int = 4,
        queue_max: int | None = None,
        close_seconds: float = 10.0,
    ) -> None:
        if batch_max < 1 or in_flight < 1:
            raise ValueError("batch_max and in_flight must be at least 1")
        self._pool = pool
        self._batch_max = batch_max
        self._in_flight = in_flight
        self._close_seconds = close_seconds
        self._queue: deque[_Waiting] = deque()
        # Room in the queue; taken by `submit`, given back when a writer takes the entry.
        self._room = asyncio.Semaphore(queue_max if queue_max is not None else 20 * batch_max)
        self._writers: set[asyncio.Task[None]] = set()
        # Writers at work, counted by `_drain` itself: a writer that found the queue
        # empty stops counting at once, before its task is done, so a request queued
        # just then still gets a writer.
        self._active = 0
        self._writing: set[_Waiting] = set()
        self._closed = False

    async def submit(self, new: NewRun) -> tuple[Run, bool]:
        """Write `new` with whatever else is waiting; returns the run and whether this
        request created it. Raises what the write raised, in the caller's task."""
        if self._closed:
            raise _shutting_down()
        await self._room.acquire()
        if self._closed:
            self._room.release()
            raise _shutting_down()
        waiting = _Waiting(new)
        self._queue.append(waiting)
        if self._active < self._in_flight:
            self._active += 1
            # A fresh context: the writer serves many requests, so it must carry none
            # of this one's context variables (its request id in log lines, say).
            task = asyncio.get_running_loop().create_task(
                self._drain(), name="run-intake", context=contextvars.Context()
            )
            self._writers.add(task)
            task.add_done_callback(self._writers.discard)
        return await waiting.future

    def _take(self) -> list[_Waiting]:
        batch: list[_Waiting] = []
        while self._queue and len(batch) < self._batch_max:
            waiting = self._queue.popleft()
            self._room.release()
            if not waiting.future.done():  # else its client went away before it was written
                batch.append(waiting)
        return batch

    async def _drain(self) -> None:
        try:
            while self._queue:
                batch = self._take()
                if not batch:
                    continue
                self._writing.update(batch)
                try:
                    await self._write(batch)
                except BaseException:  # cancelled by `close`: nobody may wait forever
                    for waiting in batch:
                        waiting.fail(_shutting_down())
                    raise
                finally:
                    self._writing.difference_update(batch)
        finally:
            self._active -= 1

    async def _write(self, batch: list[_Waiting]) -> None:
        try:
            async with self._pool.acquire() as conn:
                outcomes = await create_runs(conn, [waiting.new for waiting in batch])
        except Exception as exc:
            if len(batch) == 1 or unreachable(exc):
                for waiting in batch:
                    waiting.fail(exc)
                return
            log.warning(
                "writing %d runs together failed, writing them one by one: %s", len(batch), exc
            )
            await self._write_one_by_one(batch)
            return
        for waiting, outcome in zip(batch, outcomes, strict=True):
            waiting.settle(outcome)

    async def _write_one_by_one(self, batch: list[_Waiting]) -> None:
        """Each request in its own statement, in order: as if they had come one after
        another, so a request that cannot be written fails alone."""
        for n, waiting in enumerate(batch):
            try:
                async with self._pool.acquire() as conn:
                    [outcome] = await create_runs(conn, [waiting.new])
            except Exception as exc:
                if unreachable(exc):  # the database went away meanwhile: all would fail
                    for rest in batch[n:]:
                        rest.fail(exc)
                    return
                waiting.fail(exc)
            else:
                waiting.settle(outcome)

    async def close(self) -> None:
        """Refuse new requests, write the queued ones, and fail what is left after
        `close_seconds` (503, so a client with an Idempotency-Key can safely retry)."""
        self._closed = True
        if self._writers:
            await asyncio.wait(set(self._writers), timeout=self._close_seconds)
        stuck = {task for task in self._writers if not task.done()}
        for task in stuck:
            task.cancel()
        if stuck:
            # A cancellation a driver call absorbs must not hold shutdown up.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(_CANCEL_GRACE_SECONDS):
                    await asyncio.gather(*stuck, return_exceptions=True)
        for waiting in [*self._writing, *self._queue]:
            waiting.fail(_shutting_down())
        while self._queue:
            self._queue.popleft()
            self._room.release()
