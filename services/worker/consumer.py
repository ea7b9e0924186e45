"""The stream consumer: reads jobs through the consumer group and runs them concurrently.

A job is acknowledged only once its run is settled here: finished, refused at claim
(terminal, or held by another live lease), or dropped after the gateway took it away. A
worker that dies leaves its entries pending in the group for another to reclaim.
"""

from __future__ import annotations

import asyncio
import logging
import time

import httpx
from pydantic import ValidationError
from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError

from services.contract.jobs import JobMessage, StreamNames
from services.contract.worker_api import ClaimGrant, FailReport
from services.telemetry import logs
from services.worker import metrics
from services.worker.agent_loop import AgentLoop
from services.worker.gateway_client import GatewayClient, LeaseLost

log = logging.getLogger(__name__)

_MAX_BACKOFF_SECONDS = 5.0

# XREADGROUP's reply: [(stream, [(entry_id, {field: value})])]
_ReadReply = list[tuple[bytes, list[tuple[bytes, dict[bytes, bytes]]]]] | None


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
        self._tasks: set[asyncio.Task[None]] = set()

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
        await self.ensure_group()
        backoff = 0.1
        while not stop.is_set():
            free = self._max_in_flight - len(self._tasks)
            if free <= 0:
                await asyncio.wait(self._tasks, return_when=asyncio.FIRST_COMPLETED)
                continue
            try:
                batches: _ReadReply = await self._redis.xreadgroup(  # type: ignore[assignment]
                    self._streams.group,
                    self._worker_id,
                    {self._streams.runs: ">"},
                    count=free,
                    block=self._read_block_ms,
                )
            except ResponseError as exc:
                if "NOGROUP" not in str(exc):
                    raise
                log.warning("consumer group is gone (Redis lost its data?); recreating it")
                await self.ensure_group()
                continue
            except (RedisError, OSError) as exc:
                log.warning("cannot read the runs stream, retrying in %.1fs: %s", backoff, exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, _MAX_BACKOFF_SECONDS)
                continue
            backoff = 0.1
            for _stream, entries in batches or []:
                self._start(entries)
            if time.monotonic() >= self._next_reclaim:
                self._next_reclaim = time.monotonic() + self._reclaim_idle_seconds / 4
                await self._reclaim(self._max_in_flight - len(self._tasks))

    def _start(self, entries: list[tuple[bytes, dict[bytes, bytes]]]) -> None:
        for entry_id, fields in entries:
            task = asyncio.create_task(self._handle(entry_id, fields))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

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
                count=free,
            )
        except (RedisError, OSError) as exc:
            log.warning("cannot reclaim idle entries: %s", exc)
            return
        entries = [(entry_id, fields) for entry_id, fields in reply[1] if fields]
        if entries:
            log.info("reclaimed %d idle entries", len(entries))
            self._start(entries)

    async def drain(self, grace_seconds: float) -> None:
        """Wait for in-flight runs; whatever is still going after `grace_seconds` is cancelled
        and its entry stays pending for another worker."""
        if not self._tasks:
            return
        _done, pending = await asyncio.wait(self._tasks, timeout=grace_seconds)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    async def _handle(self, entry_id: bytes, fields: dict[bytes, bytes]) -> None:
        with metrics.RUNS_IN_FLIGHT.track_inprogress():
            try:
                job = JobMessage.from_fields(fields)
            except ValidationError as exc:
                log.error("dropping malformed job %s: %s", entry_id, exc)
                await self._ack(entry_id)
                return
            logs.run_id.set(str(job.run_id))
            grant = await self._claim(job)
            if grant is not None:
                await self._execute(grant)
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

    async def _execute(self, grant: ClaimGrant) -> None:
        try:
            await self._loop.execute(grant)
        except (httpx.TransportError, httpx.HTTPStatusError) as exc:
            log.error("run %s abandoned, the gateway is unreachable: %s", grant.run_id, exc)
        except Exception as exc:
            log.exception("run %s crashed in the worker", grant.run_id)
            try:
                await self._gateway.fail(
                    grant.run_id,
                    FailReport(
                        epoch=grant.epoch,
                        error=f"worker error: {type(exc).__name__}: {exc}"[:10_000],
                    ),
                )
            except (LeaseLost, httpx.HTTPError) as report_exc:
                log.error("could not report the failure of run %s: %s", grant.run_id, report_exc)

    async def _ack(self, entry_id: bytes) -> None:
        await self._redis.xack(self._streams.runs, self._streams.group, entry_id)
