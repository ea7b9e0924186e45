"""The dead-letter stream: where a job goes when it cannot be run, instead of vanishing or
coming round for ever.

Two kinds of entry land there. One that is not a readable job (a bad publisher, a
hand-made `XADD`) can never be run, so it goes at once with its raw fields, where an
operator can see it, rather than being dropped. One delivered more than `max_deliveries`
times has been taken by worker after worker and never settled — most likely its run
kills the worker that runs it — so the worker asks the gateway to fail the run with the
reason before setting the entry aside. The gateway refuses while a live lease holds the
run: someone is working on it through another entry, and this one is only a duplicate.

A move is `XADD` to the dead-letter stream and `XACK` on the runs stream in one
`MULTI`, so an entry is never in both places or in neither. Whatever cannot be done now
(the gateway or Redis is away) leaves the entry pending: it comes round again.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable

import httpx
from pydantic import ValidationError
from redis.asyncio import Redis
from redis.exceptions import RedisError

from services.contract.jobs import DeadLetter, JobMessage, StreamNames
from services.contract.worker_api import DeadLetterReport
from services.worker import metrics
from services.worker.gateway_client import GatewayClient, LeaseLost

log = logging.getLogger(__name__)

Fields = dict[bytes, bytes]


class DeadLetters:
    def __init__(
        self,
        redis: Redis,
        streams: StreamNames,
        gateway: GatewayClient,
        *,
        acknowledge: Callable[[bytes], Awaitable[None]],
        worker_id: str,
        max_deliveries: int,
    ) -> None:
        """`acknowledge` is the consumer's: a duplicate is settled like any finished job."""
        self._redis = redis
        self._streams = streams
        self._gateway = gateway
        self._acknowledge = acknowledge
        self._worker_id = worker_id
        self.max_deliveries = max_deliveries

    async def malformed(
        self, entry_id: bytes, fields: Fields, deliveries: int, error: ValueError
    ) -> None:
        """Set aside an entry that is not a job: unreadable text, or fields that do not
        make a `JobMessage`."""
        if isinstance(error, ValidationError):
            problems = "; ".join(
                f"{'.'.join(str(part) for part in problem['loc']) or 'job'}: {problem['msg']}"
                for problem in error.errors()
            )
        else:
            problems = str(error)
        log.error("job %s is malformed, moving it to the dead letters: %s", entry_id, problems)
        await self._move(
            entry_id, fields, None, f"malformed job: {problems}"[:1000], deliveries, "malformed"
        )

    async def give_up(
        self, entry_id: bytes, fields: Fields, job: JobMessage, deliveries: int
    ) -> None:
        """Fail the run of an entry delivered too often, and set the entry aside."""
        limit = f"max_deliveries is {self.max_deliveries}"
        reason = f"job delivered {deliveries} times without finishing ({limit})"
        try:
            await self._gateway.dead_letter(
                job.run_id,
                DeadLetterReport(
                    entry_id=entry_id.decode(),
                    worker_id=self._worker_id,
                    deliveries=deliveries,
                    reason=limit,
                ),
            )
        except LeaseLost as exc:
            if exc.status == 404:
                log.warning("run %s of dead job %s is unknown: %s", job.run_id, entry_id, exc)
                await self._move(
                    entry_id,
                    fields,
                    job,
                    f"{reason}; the gateway knows no such run",
                    deliveries,
                    "max_deliveries",
                )
            else:
                log.info("job %s is a duplicate (%s); acknowledged", entry_id, exc)
                await self._acknowledge(entry_id)
            return
        except httpx.HTTPError as exc:
            log.warning(
                "cannot fail run %s of dead job %s now, it stays pending: %s",
                job.run_id,
                entry_id,
                exc,
            )
            return
        log.error("run %s failed: %s", job.run_id, reason)
        await self._move(entry_id, fields, job, reason, deliveries, "max_deliveries")

    async def _move(
        self,
        entry_id: bytes,
        fields: Fields,
        job: JobMessage | None,
        reason: str,
        deliveries: int,
        label: str,
    ) -> None:
        letter = DeadLetter(
            run_id=None if job is None else job.run_id,
            reason=reason,
            deliveries=deliveries,
            source_id=entry_id.decode(),
            worker_id=self._worker_id,
            fields=_as_json(fields),
        )
        try:
            async with self._redis.pipeline(transaction=True) as moving:
                moving.xadd(self._streams.dead_letter, letter.to_fields())  # type: ignore[arg-type]
                moving.xack(self._streams.runs, self._streams.group, entry_id)
                await moving.execute()
        except (RedisError, OSError) as exc:
            log.warning(
                "cannot move job %s to the dead letters, it stays pending: %s", entry_id, exc
            )
            return
        metrics.dead_letter(label)


def _as_json(fields: Fields) -> str:
    """The entry's fields as they were, readable whatever bytes they hold."""
    return json.dumps(
        {
            key.decode(errors="backslashreplace"): value.decode(errors="backslashreplace")
            for key, value in fields.items()
        },
        ensure_ascii=False,
    )
