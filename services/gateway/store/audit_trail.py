"""Reading the audit trail: the filtered listing the API pages through and the whole
chain in link order that an export writes out. Appending and linking stay in
`services.gateway.audit`, next to the transaction semantics they depend on."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import asyncpg

from services.contract.audit import AuditEvent

EVENT_COLUMNS = """e.id, e.project, e.actor, e.actor_kind, e.action, e.target, e.details,
    e.request_id, e.created_at, e.mac_key_id, e.mac, c.seq, c.prev_hash, c.hash, c.key_id"""


def to_event(row: asyncpg.Record) -> AuditEvent:
    return AuditEvent.model_validate(dict(row))


async def list_events(
    pool: asyncpg.Pool,
    project: str,
    *,
    filters: dict[str, Any],
    before: int | None,
    limit: int,
) -> list[AuditEvent]:
    """Newest first; linked or not yet linked (then without seq and hashes)."""
    rows = await pool.fetch(
        f"""SELECT {EVENT_COLUMNS} FROM audit_events e
              LEFT JOIN audit_chain c ON c.event_id = e.id
             WHERE e.project = $1
               AND ($2::text IS NULL OR e.action = $2 OR e.action LIKE $2 || '.%')
               AND ($3::text IS NULL OR e.actor ILIKE '%' || $3 || '%')
               AND ($4::text IS NULL OR e.target = $4)
               AND ($5::timestamptz IS NULL OR e.created_at >= $5)
               AND ($6::timestamptz IS NULL OR e.created_at < $6)
               AND ($7::bigint IS NULL OR e.id < $7)
             ORDER BY e.id DESC LIMIT $8""",
        project,
        filters.get("action"),
        filters.get("actor"),
        filters.get("target"),
        filters.get("since"),
        filters.get("until"),
        before,
        limit,
    )
    return [to_event(r) for r in rows]


async def chained_events(conn: asyncpg.Connection, project: str) -> AsyncIterator[AuditEvent]:
    """Every linked event of `project` in link order, streamed; call inside a
    repeatable-read transaction so the export is one consistent chain."""
    async for row in conn.cursor(
        f"""SELECT {EVENT_COLUMNS} FROM audit_chain c JOIN audit_events e ON e.id = c.event_id
             WHERE c.project = $1 ORDER BY c.seq""",
        project,
    ):
        yield to_event(row)
