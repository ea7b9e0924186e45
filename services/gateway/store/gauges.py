"""The counts behind the shared-state gauges, read when Prometheus scrapes.

Counted in PostgreSQL rather than kept by every writer, so every gateway reports the
same figures however many there are."""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg


@dataclass(frozen=True)
class Counts:
    approvals_pending: int
    outbox_backlog: int
    runs_by_status: dict[str, int]


async def read_counts(conn: asyncpg.Connection) -> Counts:
    pending = await conn.fetchval("SELECT count(*) FROM approvals WHERE status = 'pending'")
    backlog = await conn.fetchval("SELECT count(*) FROM outbox")
    by_status = dict(await conn.fetch("SELECT status, count(*) FROM runs GROUP BY status"))
    return Counts(approvals_pending=pending, outbox_backlog=backlog, runs_by_status=by_status)
