"""System housekeeping every gateway runs: expire approvals nobody decided in time.

Every query takes its rows with `SKIP LOCKED`, so gateways sweep side by side without
doing the same work twice.
"""

from __future__ import annotations

import logging

import asyncpg

from services.gateway.background import BackgroundLoop
from services.gateway.store.approvals import expire_due

log = logging.getLogger(__name__)


class Sweeper(BackgroundLoop):
    name = "sweeper"

    def __init__(self, pool: asyncpg.Pool, *, interval_seconds: float) -> None:
        super().__init__()
        self._pool = pool
        self._interval = interval_seconds

    async def step(self) -> float:
        try:
            expired = await expire_due(self._pool)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            log.warning("sweeper round failed: %s", exc)
            return self._interval
        if expired:
            log.info("expired %d approvals", expired)
        return self._interval
