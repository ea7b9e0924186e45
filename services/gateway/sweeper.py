"""System housekeeping every gateway runs: expire approvals nobody decided in time, and
publish again the runs no worker is moving (their job was lost, or their worker died).

Every query takes its rows with `SKIP LOCKED`, so gateways sweep side by side without
doing the same work twice.
"""

from __future__ import annotations

import logging

import asyncpg

from services.gateway.background import BackgroundLoop
from services.gateway.outbox import OutboxRelay
from services.gateway.store.approvals import expire_due
from services.gateway.store.runs import republish_stale

log = logging.getLogger(__name__)


class Sweeper(BackgroundLoop):
    name = "sweeper"

    def __init__(
        self,
        pool: asyncpg.Pool,
        relay: OutboxRelay,
        *,
        interval_seconds: float,
        requeue_after: float,
    ) -> None:
        super().__init__()
        self._pool = pool
        self._relay = relay
        self._interval = interval_seconds
        self._requeue_after = requeue_after

    async def step(self) -> float:
        try:
            expired = await expire_due(self._pool)
            republished = await republish_stale(self._pool, after_seconds=self._requeue_after)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            log.warning("sweeper round failed: %s", exc)
            return self._interval
        if expired:
            log.info("expired %d approvals", expired)
        if republished:
            log.info("published %d stalled runs again", republished)
        if expired or republished:
            self._relay.wake()
        return self._interval
