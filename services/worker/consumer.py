"""The stream consumer: reads jobs through the consumer group and runs them concurrently.

A job is acknowledged only once its run is settled here: finished, refused at claim
(terminal, or held by another live lease), dropped after the gateway took it away, or
set aside in the dead-letter stream (`dead_lettering.py`). A worker that dies leaves its
entries pending in the group for another to reclaim.

Stopping is a hand-over, not an abandonment: reading ends at once (entries that the
last read still brought are put back at the stream's end untouched), runs in flight get
`drain` seconds to finish, and those still going then are cancelled and released at
the gateway, which queues them again at once for another worker to continue from their
recorded steps. Their entries stay pending, so a release that did not get through is
made good by reclaim once the lease has run out.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence

import httpx
from pydantic import ValidationError
from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError

from services.contract.jobs import JobMessage, StreamNames
from services.contract.worker_api import ClaimGrant, FailReport, ReleaseReport
from services.telemetry import logs
from services.worker import fair_slots, metrics
from services.worker.agent_loop import AgentLoop
from services.worker.dead_lettering import DeadLetters
from services.worker.gateway_client import GatewayClient, LeaseLost
from services.worker.loop_lag import LoopLag

log = logging.getLogger(__name__)

_MAX_BACKOFF_SECONDS = 5.0
# Jobs taken per read. Each becomes a claim; taking a thousand at once would start a
# thousand claims together and hold them all in the callback queue, where the first
# ones wait behind the rest. Smaller reads let claims start as fast as they finish.
_READ_BATCH = 64
# Jobs read but not yet claimed that the worker holds before it reads more. Claims wait
# here behind the step reports of the runs already going (`fair_slots`), and whatever
# waits here has left the relay's fair turns: reading on while claims queued let one
# project's flood pile up in the worker and start 41 of its runs while another
# project's one run waited unread in the stream (measured, one worker). Held to about a
# dispatch window, the backlog waits in the outbox, where the turns are fair.
_UNCLAIMED_AHEAD = 8
# A release the gateway does not answer this fast is left to the lease's expiry: a
# stopping worker must not outstay its service manager's patience.
_RELEASE_SECONDS = 5.0

_Entry = tuple[bytes, dict[bytes, bytes]]
# XREADGROUP's reply: [(stream, [(entry_id, {field: value})])]
_ReadReply = list[tuple[bytes, list[_Entry]]] | None


class Consumer:
    def __init__(
        self,
        redis: Redis,
        streams: StreamNames,
        gateway: GatewayClient,
        agent_loop: AgentLoop,
        *,
        worker_id: str,
        max_in_flight: int,
        read_block_ms: int,
        reclaim_idle_seconds: float = 60.0,
        max_deliveries: int = 5,
        max_loop_lag_seconds: float = 0.01,
    ) -> None:
        self._redis = redis
        self._streams = streams
        self._gateway = gateway
        self._loop = agent_loop
        self._worker_id = worker_id
        self._max_in_flight = max_in_flight
        self._read_block_ms = read_block_ms
        self._reclaim_idle_seconds = reclaim_idle_seconds
        self._next_reclaim = 0.0
        self._next_touch = 0.0
        self._tasks: set[asyncio.Task[None]] = set()
        self._unclaimed = 0
        self._claim_settled = asyncio.Event()
        self._lag = LoopLag(limit_seconds=max_loop_lag_seconds)
        self._entries: dict[asyncio.Task[None], bytes] = {}
        # The grant each task is executing, for the hand-back when a drain runs out.
        self._holding: dict[asyncio.Task[None], ClaimGrant] = {}
        self._dead_letters = DeadLetters(
            redis,
            streams,
            gateway,
            acknowledge=self._ack,
            worker_id=worker_id,
            max_deliveries=max_deliveries,
        )

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    async def ensure_group(self) -> None:
        """Create the group from the stream's start, so jobs published before any worker
        existed are not skipped, and join it at once: Redis before 7.2 lists a consumer
        only after its first delivery, and operators want to see idle workers too."""
        try:
            await self._redis.xgroup_create(
                self._streams.runs, self._streams.group, id="0", mkstream=True
            )
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        await self._redis.xgroup_createconsumer(
            self._streams.runs, self._streams.group, self._worker_id
        )

    async def run(self, stop: asyncio.Event) -> None:
        """Read and start jobs until `stop` is set; runs in flight carry on (see `drain`)."""
        await self.ensure_group()
        stopping = asyncio.create_task(stop.wait())
        self._lag.start()
        try:
            await self._consume(stop, stopping)
        finally:
            await self._lag.stop()
            stopping.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await stopping

    async def _consume(self, stop: asyncio.Event, stopping: asyncio.Task[bool]) -> None:
        backoff = 0.1
        while not stop.is_set():
            if time.monotonic() >= self._next_touch:
                self._next_touch = time.monotonic() + self._reclaim_idle_seconds / 4
                await self._touch()
            free = self._max_in_flight - len(self._tasks)
            if free > 0 and self._unclaimed >= _UNCLAIMED_AHEAD:
                metrics.READS_DEFERRED.labels(reason="claiming").inc()
                self._claim_settled.clear()
                settled = asyncio.ensure_future(self._claim_settled.wait())
                await asyncio.wait(
                    {settled, stopping},
                    timeout=self._reclaim_idle_seconds / 4,
                    return_when=asyncio.FIRST_COMPLETED,
                )
                settled.cancel()
                continue
            if free <= 0 or (self._tasks and self._lag.busy):
                # Full, or the event loop is behind (`loop_lag`): more jobs would only
                # queue here while other workers may be idle. Take more once a run ends.
                metrics.READS_DEFERRED.labels(reason="full" if free <= 0 else "busy").inc()
                await asyncio.wait(
                    {*self._tasks, stopping},
                    timeout=self._reclaim_idle_seconds / 4,
                    return_when=asyncio.FIRST_COMPLETED,
                )
                continue
            try:
                # A read in progress when the stop comes is let finish (it blocks at most
                # `read_block_ms`) rather than cut off: what it brought would otherwise
                # sit pending in this worker's name until reclaimed. It is put back.
                batches = await self._read(
                    min(free, _READ_BATCH, _UNCLAIMED_AHEAD - self._unclaimed)
                )
            except ResponseError as exc:
                # NOGROUP on the next read, or UNBLOCKED for a read that was waiting when
                # the stream was deleted (FLUSHALL, a restart without persistence).
                if "NOGROUP" not in str(exc) and "UNBLOCKED" not in str(exc):
                    raise
                log.warning("consumer group is gone (Redis lost its data?); recreating it")
                await self.ensure_group()
                continue
            except (RedisError, OSError) as exc:
                log.warning("cannot read the runs stream, retrying in %.1fs: %s", backoff, exc)
                await asyncio.wait({stopping}, timeout=backoff)
                backoff = min(backoff * 2, _MAX_BACKOFF_SECONDS)
                continue
            backoff = 0.1
            entries = [entry for _stream, batch in batches or [] for entry in batch]
            if stop.is_set():
                await self._put_back(entries)
                return
            self._start(entries)
            if time.monotonic() >= self._next_reclaim:
                self._next_reclaim = time.monotonic() + self._reclaim_idle_seconds / 4
                await self._reclaim(self._max_in_flight - len(self._tasks))

    async def _read(self, count: int) -> _ReadReply:
        batches: _ReadReply = await self._redis.xreadgroup(  # type: ignore[assignment]
            self._streams.group,
            self._worker_id,
            {self._streams.runs: ">"},
            count=count,
            block=self._read_block_ms,
        )
        return batches

    async def _touch(self) -> None:
        """Reset the idle time of the entries whose runs are still going here (XCLAIM
        with JUSTID, which leaves their delivery count alone), so that only a dead or
        stuck worker's entries ever idle long enough to be reclaimed. Without this a run
        longer than `reclaim_idle_seconds` would have its entry taken by another worker,
        refused there (`lease_held`) and acknowledged, losing the delivery count that
        dead-lettering relies on."""
        await self._rejoin()
        held: list[bytes | str | int | memoryview] = list(self._entries.values())
        if not held:
            return
        try:
            await self._redis.xclaim(
                self._streams.runs,
                self._streams.group,
                self._worker_id,
                min_idle_time=0,
                message_ids=held,
                justid=True,
            )
        except (RedisError, OSError) as exc:
            log.warning("cannot mark %d running jobs as alive: %s", len(held), exc)

    async def _rejoin(self) -> None:
        """Be a consumer of the group again if the gateway's sweeper removed this one
        (`idle_consumers`: it takes a worker that read nothing for minutes for a dead
        one), so the worker stays listed, and ready, while it waits for jobs."""
        try:
            await self._redis.xgroup_createconsumer(
                self._streams.runs, self._streams.group, self._worker_id
            )
        except (RedisError, OSError) as exc:
            log.warning("cannot rejoin the consumer group: %s", exc)

    def _start(self, entries: Sequence[_Entry], deliveries: Sequence[int] | None = None) -> None:
        for n, (entry_id, fields) in enumerate(entries):
            task = asyncio.create_task(
                self._handle(entry_id, fields, 1 if deliveries is None else deliveries[n])
            )
            self._tasks.add(task)
            self._entries[task] = entry_id
            task.add_done_callback(self._settled)

    def _settled(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._entries.pop(task, None)

    async def _put_back(self, entries: list[_Entry]) -> None:
        """Return entries read just as the worker began to stop: the same job at the end of
        the stream for another worker now, rather than pending here until reclaimed."""
        if not entries:
            return
        try:
            async with self._redis.pipeline(transaction=True) as returning:
                for entry_id, fields in entries:
                    returning.xadd(self._streams.runs, fields)  # type: ignore[arg-type]
                    returning.xack(self._streams.runs, self._streams.group, entry_id)
                await returning.execute()
        except (RedisError, OSError) as exc:
            log.warning("could not put back %d jobs, they wait for reclaim: %s", len(entries), exc)
            return
        log.info("stopping: put back %d jobs read as the stop came", len(entries))

    async def _reclaim(self, free: int) -> None:
        """Take over entries another consumer was given but never acknowledged (it died,
        or was cut off) once they have idled past `reclaim_idle_seconds`. The claim at
        the gateway decides whether the run is really free, so taking one too many is
        harmless."""
        if free <= 0:
            return
        try:
            reply = await self._redis.xautoclaim(
                self._streams.runs,
                self._streams.group,
                self._worker_id,
                min_idle_time=int(self._reclaim_idle_seconds * 1000),
                start_id="0-0",
                count=min(free, _READ_BATCH),
            )
        except (RedisError, OSError) as exc:
            log.warning("cannot reclaim idle entries: %s", exc)
            return
        entries = [(entry_id, fields) for entry_id, fields in reply[1] if fields]
        if not entries:
            return
        try:
            deliveries = await self._deliveries([entry_id for entry_id, _ in entries])
        except (RedisError, OSError) as exc:
            log.warning("cannot count deliveries, the entries wait for the next reclaim: %s", exc)
            return
        log.info("reclaimed %d idle entries", len(entries))
        self._start(entries, deliveries)

    async def _deliveries(self, entry_ids: list[bytes]) -> list[int]:
        """How often each entry has been delivered, this reclaim included (from XPENDING)."""
        async with self._redis.pipeline(transaction=False) as asking:
            for entry_id in entry_ids:
                asking.xpending_range(
                    self._streams.runs, self._streams.group, min=entry_id, max=entry_id, count=1
                )
            replies = await asking.execute()
        # An entry acknowledged meanwhile has no pending record; 1 lets it through to the
        # claim, which settles it.
        return [int(reply[0]["times_delivered"]) if reply else 1 for reply in replies]

    async def drain(self, grace_seconds: float) -> None:
        """Wait up to `grace_seconds` for the runs in flight; cancel those still going and
        hand them back to the gateway. Their entries stay pending in any case."""
        if not self._tasks:
            return
        _done, pending = await asyncio.wait(self._tasks, timeout=grace_seconds)
        if not pending:
            return
        held = [self._holding[task] for task in pending if task in self._holding]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        released = await asyncio.gather(*(self._release(grant) for grant in held))
        log.info(
            "stopping: %d jobs unfinished after %gs, %d runs handed back (%s), %d left to "
            "their lease",
            len(pending),
            grace_seconds,
            sum(released),
            ", ".join(str(grant.run_id) for grant, ok in zip(held, released, strict=True) if ok),
            len(held) - sum(released),
        )

    async def _release(self, grant: ClaimGrant) -> bool:
        try:
            await asyncio.wait_for(
                self._gateway.release(
                    grant.run_id,
                    ReleaseReport(
                        epoch=grant.epoch,
                        lease_token=grant.lease_token,
                    ),
                ),
                _RELEASE_SECONDS,
            )
        except (LeaseLost, httpx.HTTPError, TimeoutError) as exc:
            log.warning("run %s not handed back: %s", grant.run_id, exc)
            return False
        return True

    async def _handle(self, entry_id: bytes, fields: dict[bytes, bytes], deliveries: int) -> None:
        with metrics.RUNS_IN_FLIGHT.track_inprogress():
            try:
                job = JobMessage.from_fields(fields)
            except (ValidationError, UnicodeDecodeError) as exc:
                await self._dead_letters.malformed(entry_id, fields, deliveries, exc)
                return
            logs.run_id.set(str(job.run_id))
            fair_slots.serving.set(job.project)
            if deliveries > self._dead_letters.max_deliveries:
                await self._dead_letters.give_up(entry_id, fields, job, deliveries)
                return
            self._unclaimed += 1
            try:
                grant = await self._claim(job)
            finally:
                self._unclaimed -= 1
                self._claim_settled.set()
            if grant is not None:
                # What the claim says, not the stream: an entry could name another project.
                fair_slots.serving.set(grant.project)
                task = asyncio.current_task()
                assert task is not None
                self._holding[task] = grant
                try:
                    if not await self._execute(grant):
                        return
                finally:
                    del self._holding[task]
            await self._ack(entry_id)

    async def _claim(self, job: JobMessage) -> ClaimGrant | None:
        backoff = 0.2
        while True:
            try:
                grant = await self._gateway.claim(job.run_id, self._worker_id)
            except LeaseLost as exc:
                metrics.claim("refused")
                log.info("run %s not claimed: %s", job.run_id, exc)
                return None
            except (httpx.TransportError, httpx.HTTPStatusError) as exc:
                metrics.claim("retried")
                log.warning(
                    "claim of run %s failed, retrying in %.1fs: %s", job.run_id, backoff, exc
                )
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, _MAX_BACKOFF_SECONDS)
            else:
                metrics.claim("granted")
                return grant

    async def _execute(self, grant: ClaimGrant) -> bool:
        """Run the claimed run; whether it is settled as far as this worker can tell. A run
        left unsettled (the gateway could not be told) keeps its entry pending, so it is
        reclaimed and continued once its lease runs out instead of waiting for the
        gateway's sweeper."""
        try:
            await self._loop.execute(grant)
        except (httpx.TransportError, httpx.HTTPStatusError) as exc:
            log.error("run %s abandoned, the gateway is unreachable: %s", grant.run_id, exc)
            return False
        except Exception as exc:
            log.exception("run %s crashed in the worker", grant.run_id)
            try:
                await self._gateway.fail(
                    grant.run_id,
                    FailReport(
                        epoch=grant.epoch,
                        lease_token=grant.lease_token,
                        error=f"worker error: {type(exc).__name__}: {exc}"[:10_000],
                    ),
                )
            except LeaseLost as report_exc:
                log.info("run %s was no longer ours to fail: %s", grant.run_id, report_exc)
            except httpx.HTTPError as report_exc:
                log.error("could not report the failure of run %s: %s", grant.run_id, report_exc)
                return False
        return True

    async def _ack(self, entry_id: bytes) -> None:
        try:
            await self._redis.xack(self._streams.runs, self._streams.group, entry_id)
        except (RedisError, OSError) as exc:
            log.warning("cannot acknowledge job %s, it stays pending: %s", entry_id, exc)
