"""The tool catalogue: what each worker reported it can call."""

from __future__ import annotations

import asyncpg

from services.contract.api import ToolEntry
from services.contract.tools import ToolSpec


async def replace_catalogue(pool: asyncpg.Pool, worker_id: str, tools: list[ToolSpec]) -> None:
    """A worker's report replaces everything it reported before."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("DELETE FROM worker_tools WHERE worker_id = $1", worker_id)
        await conn.executemany(
            """INSERT INTO worker_tools (worker_id, name, server, tool, description,
                                         input_schema, idempotent)
               VALUES ($1, $2, $3, $4, $5, $6, $7)""",
            [
                (worker_id, t.name, t.server, t.tool, t.description, t.input_schema, t.idempotent)
                for t in tools
            ],
        )


async def catalogue(pool: asyncpg.Pool) -> list[ToolEntry]:
    """Each tool once, described as its most recent reporter describes it."""
    rows = await pool.fetch(
        """SELECT DISTINCT ON (name) name, server, tool, description, input_schema, idempotent,
                  array_agg(worker_id) OVER (PARTITION BY name) AS workers
             FROM worker_tools WHERE reported_at > now() - interval '5 minutes'
            ORDER BY name, reported_at DESC"""
    )
    return [ToolEntry.model_validate({**dict(r), "workers": sorted(r["workers"])}) for r in rows]
