"""One run followed as it happens: its model's tokens, its steps, its end (`run_stream`
in the contract says what each event carries).

Two sources, merged in order. Steps are the durable record, read from PostgreSQL when
the hub says the run or its steps changed (`RunWaiters.watching`), never polled. Tokens
are the worker's preview of the step it is writing, read from the run's short-lived
Redis stream with one blocking `XREAD` held while the client is connected. A step is
sent once it has settled, after the tokens written before it (the worker writes its
last delta before it reports the step, so draining the run's token stream up to now,
before sending the step, leaves none of that step behind), and tokens of a step already
sent are dropped. Tokens of an epoch older than one already seen are a fenced-off
worker's and are dropped too.

While a client is connected the run's watched key lives (renewed well within its
expiry), which is what makes workers stream the model calls of a run started without
`stream`. Each gateway holds at most `max_run_streams` open: every one holds a Redis
connection in its `XREAD`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import AsyncIterator
from contextlib import suppress
from typing import Any

import asyncpg
from redis.asyncio import Redis
from redis.exceptions import RedisError

from services.contract.errors import ErrorCode
from services.contract.jobs import StreamNames
from services.contract.run_stream import END_ID, RunStreamEvent, StreamPosition, entry_of
from services.contract.runs import StepStatus
from services.gateway.errors import ServiceUnavailable
from services.gateway.metrics import RUN_STREAMS
from services.gateway.redis_replies import text
from services.gateway.run_waiters import RunWaiters
from services.gateway.store import runs as run_store
from services.gateway.store.steps import list_steps

log = logging.getLogger(__name__)

_UNSETTLED = frozenset({StepStatus.STARTED, StepStatus.WAITING_APPROVAL, StepStatus.APPROVED})
_HEARTBEAT = b": heartbeat\n\n"
_WATCH_SECONDS = 30
_RENEW_SECONDS = 10.0
_STEPS_PER_READ = 100
_ENTRIES_PER_READ = 1000
_REDIS_RETRY_SECONDS = 1.0
_BLOCK_MS = 4000
"""Under redis-py's 5 s socket timeout: a longer block would be cut as a timeout."""

Entries = list[tuple[str, dict[str, Any]]]


class StreamSlots:
    """How many run streams this gateway holds open, and the most it will."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self.open = 0

    def take(self) -> None:
        if self.open >= self._limit:
            raise ServiceUnavailable(
                f"this gateway holds its {self._limit} run streams open; retry shortly, or "
                "follow the run with GET /v1/runs/{id}?wait=N",
                code=ErrorCode.TOO_MANY_STREAMS,
                retry_after=5,
            )
        self.open += 1
        RUN_STREAMS.inc()

    def give_back(self) -> None:
        self.open -= 1
        RUN_STREAMS.dec()


def _event(name: RunStreamEvent, position: StreamPosition | str, data: Any) -> bytes:
    return f"id: {position}\nevent: {name}\ndata: {json.dumps(data)}\n\n".encode()


class RunStream:
    """One client's following of one run, from `after`."""

    def __init__(
        self,
        *,
        pool: asyncpg.Pool,
        redis: Redis,
        streams: StreamNames,
        waiters: RunWaiters,
        project: str,
        run_id: uuid.UUID,
        after: StreamPosition,
        heartbeat_seconds: float,
    ) -> None:
        self._pool = pool
        self._redis = redis
        self._tokens_key = streams.run_tokens(run_id)
        self._watched_key = streams.run_watched(run_id)
        self._waiters = waiters
        self._project = project
        self._run_id = run_id
        self._position = after
        self._heartbeat = heartbeat_seconds
        self._epoch = 0
        self._reading: asyncio.Task[Entries] | None = None
        self._renew_at = 0.0

    async def events(self) -> AsyncIterator[bytes]:
        with self._waiters.watching(self._run_id) as changed:
            await self._mark_watched()
            try:
                changed.set()
                while not self._waiters.closing:
                    if not changed.is_set():
                        for event in await self._next_tokens(changed):
                            yield event
                        continue
                    changed.clear()
                    run = await run_store.get_run(self._pool, self._project, self._run_id)
                    async for event in self._new_steps():
                        yield event
                    if run.status.terminal:
                        yield _event(RunStreamEvent.END, END_ID, run.model_dump(mode="json"))
                        return
            finally:
                if self._reading is not None:
                    self._reading.cancel()
                    with suppress(asyncio.CancelledError):
                        await self._reading

    async def _next_tokens(self, changed: asyncio.Event) -> list[bytes]:
        """The tokens that arrive before the run changes: a heartbeat if neither comes
        for a while, nothing if the run changed first (the read goes on meanwhile)."""
        loop = asyncio.get_running_loop()
        if loop.time() >= self._renew_at:
            await self._mark_watched()
        if self._reading is None:
            self._reading = asyncio.create_task(self._read(self._position.entry_id))
        woken = asyncio.create_task(changed.wait())
        done, _ = await asyncio.wait(
            {self._reading, woken},
            timeout=min(self._heartbeat, _RENEW_SECONDS),
            return_when=asyncio.FIRST_COMPLETED,
        )
        woken.cancel()
        with suppress(asyncio.CancelledError):
            await woken
        if self._reading in done:
            entries, self._reading = self._reading.result(), None
            return self._tokens(entries)
        return [] if done else [_HEARTBEAT]

    async def _new_steps(self) -> AsyncIterator[bytes]:
        """The steps settled since the last one sent, each after the tokens before it."""
        while True:
            steps = await list_steps(
                self._pool, self._run_id, after=self._position.step, limit=_STEPS_PER_READ
            )
            if not steps:
                return
            drained = False
            for step in steps:
                if step.status in _UNSETTLED:
                    return
                if not drained:
                    for event in self._tokens(await self._range()):
                        yield event
                    drained = True
                self._position = StreamPosition(step.seq, self._position.entry)
                yield _event(RunStreamEvent.STEP, self._position, step.model_dump(mode="json"))
            if len(steps) < _STEPS_PER_READ:
                return

    def _tokens(self, entries: Entries) -> list[bytes]:
        """The token events of `entries` this client has not had and should see."""
        events = []
        for entry_id, fields in entries:
            entry = entry_of(entry_id)
            if entry <= self._position.entry:
                continue
            self._position = StreamPosition(self._position.step, entry)
            try:
                step, epoch = int(fields["step"]), int(fields["epoch"])
                data = {
                    "step": step,
                    "delta": str(fields["delta"]),
                    "epoch": epoch,
                    "attempt": int(fields["attempt"]),
                }
            except (KeyError, ValueError):
                log.warning("run %s: skipping malformed token entry %s", self._run_id, entry_id)
                continue
            if step <= self._position.step or epoch < self._epoch:
                continue
            self._epoch = epoch
            events.append(_event(RunStreamEvent.TOKEN, self._position, data))
        return events

    async def _read(self, after: str) -> Entries:
        """The token entries after `after`, as soon as there are any (or none, after a
        while: the caller reads again)."""
        try:
            found: Any = await self._redis.xread(
                {self._tokens_key: after},
                count=_ENTRIES_PER_READ,
                block=min(_BLOCK_MS, int(self._heartbeat * 1000)),
            )
        except (RedisError, OSError) as exc:
            log.warning("run %s: tokens unavailable: %s", self._run_id, exc)
            await asyncio.sleep(_REDIS_RETRY_SECONDS)
            return []
        return _decoded(found[0][1]) if found else []

    async def _range(self) -> Entries:
        """Every token entry after the position, without waiting."""
        try:
            found: Any = await self._redis.xrange(
                self._tokens_key, min=f"({self._position.entry_id}", max="+"
            )
        except (RedisError, OSError) as exc:
            log.warning("run %s: tokens unavailable: %s", self._run_id, exc)
            return []
        return _decoded(found)

    async def _mark_watched(self) -> None:
        self._renew_at = asyncio.get_running_loop().time() + _RENEW_SECONDS
        try:
            await self._redis.set(self._watched_key, b"1", ex=_WATCH_SECONDS)
        except (RedisError, OSError) as exc:
            log.warning("run %s: cannot ask workers for its tokens: %s", self._run_id, exc)


def _decoded(entries: list[Any]) -> Entries:
    return [
        (text(entry_id), {text(k): text(v) for k, v in fields.items()})
        for entry_id, fields in entries
    ]
