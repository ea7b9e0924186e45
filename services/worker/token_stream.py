"""Tokens published as the model writes them, for whoever follows the run.

The durable record of a model call is its step, reported over HTTP when the call ends;
this is only a preview of it, so it goes to a short-lived Redis stream per run (bounded
length, gone minutes after its last write), never to PostgreSQL. Deltas are gathered and
written in batches, at most one write every `flush_seconds` (one pipelined XADD and
EXPIRE), so an answer costs a number of Redis writes bounded by how long it takes, not
by how many tokens it has. The first delta is written at once: it is the one a waiting
user notices.

A call is published when its run was started with `stream`, or while someone follows
the run (the gateway keeps the run's watched key alive), checked before each model call:
streaming a reply costs the worker CPU for every chunk, which unwatched runs do not pay.

Each entry names the step, the lease's epoch and the attempt of the call within that
lease. A retried call (a lost connection mid-answer, a worker that died and a recovered
run) starts its text again under a new attempt or epoch, and a reader shows the latest.
Publishing never fails a run: a Redis error ends the preview of that call, and the step
still carries the whole answer.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from contextlib import suppress
from dataclasses import dataclass

from redis.asyncio import Redis
from redis.exceptions import RedisError

from services.contract.jobs import StreamNames

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TokenStreamSettings:
    flush_seconds: float = 0.03
    max_entries: int = 10_000
    """Entries a run's stream keeps (approximately): a bound on Redis memory per run."""
    ttl_seconds: int = 600


class TokenStreams:
    """Decides per model call whether to publish, and hands out the publishers."""

    def __init__(
        self, redis: Redis, streams: StreamNames, settings: TokenStreamSettings | None = None
    ) -> None:
        self._redis = redis
        self._streams = streams
        self._settings = settings or TokenStreamSettings()

    async def publisher(
        self, run_id: uuid.UUID, *, epoch: int, seq: int, requested: bool
    ) -> TokenPublisher | None:
        """A publisher for step `seq` of the run, or None when nobody wants its tokens
        (the run's starter did not ask for them, `requested`, and nobody follows it)."""
        if not requested:
            try:
                watched = await self._redis.exists(self._streams.run_watched(run_id))
            except (RedisError, OSError) as exc:
                log.debug("run %s: cannot tell whether it is watched: %s", run_id, exc)
                return None
            if not watched:
                return None
        return TokenPublisher(
            self._redis,
            self._streams.run_tokens(run_id),
            seq=seq,
            epoch=epoch,
            settings=self._settings,
        )


class TokenPublisher:
    """One model call's deltas, written in batches by one task, in order."""

    def __init__(
        self, redis: Redis, key: str, *, seq: int, epoch: int, settings: TokenStreamSettings
    ) -> None:
        self._redis = redis
        self._key = key
        self._seq = seq
        self._epoch = epoch
        self._settings = settings
        self._attempt = 1
        self._pending: list[str] = []
        self._wake = asyncio.Event()
        self._finishing = asyncio.Event()
        self._broken = False
        self._task: asyncio.Task[None] | None = None
        self.writes = 0
        """Redis writes made so far (each one pipelined XADD and EXPIRE)."""

    def write(self, delta: str) -> None:
        if self._broken or not delta:
            return
        self._pending.append(delta)
        self._wake.set()
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"tokens {self._key}")

    def restart(self) -> None:
        """The call is made again: what is not yet written of the failed attempt is
        dropped, and the next deltas start the text afresh under the next attempt."""
        self._pending.clear()
        self._attempt += 1

    async def finish(self) -> None:
        """Write what is left; called before the step is reported, so a reader has every
        delta before the step that ends them."""
        self._finishing.set()
        self._wake.set()
        if self._task is not None:
            await self._task

    async def aclose(self) -> None:
        """Stop without writing more (the call failed or the run was abandoned)."""
        self._broken = True
        if self._task is not None:
            self._task.cancel()
            with suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            await self._write_pending()
            if self._finishing.is_set() or self._broken:
                return
            with suppress(TimeoutError):
                async with asyncio.timeout(self._settings.flush_seconds):
                    await self._finishing.wait()

    async def _write_pending(self) -> None:
        if not self._pending or self._broken:
            return
        delta = "".join(self._pending)
        self._pending.clear()
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.xadd(
                    self._key,
                    {
                        "step": self._seq,
                        "epoch": self._epoch,
                        "attempt": self._attempt,
                        "delta": delta,
                    },
                    maxlen=self._settings.max_entries,
                    approximate=True,
                )
                pipe.expire(self._key, self._settings.ttl_seconds)
                await pipe.execute()
        except (RedisError, OSError) as exc:
            log.warning("tokens of %s no longer published: %s", self._key, exc)
            self._broken = True
            return
        self.writes += 1
