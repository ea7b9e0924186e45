"""The tool catalogue: what each worker reported it can call.

A listing belongs to the worker key that reported it and the label the worker gave
itself: a report replaces only that key's listing under that label. Workers of a fleet
share a key, so the label keeps their listings apart; another key (a thief's, say) can
add a listing of its own but never rewrite or delete one it did not write. Reporters that
describe a tool differently are listed apart, each with who reported it, so a forged
description ("read-only, safe to approve") never passes for the real worker's.

A listing also says which projects the tool is offered to (`projects`, NULL: all). A
project is shown only the tools offered to it, and never which other projects share one:
that would name other tenants. The listing of the worker holding a run's lease is what
decides whether the run may call a tool (`offers`).

A worker reports at start, on every change and every minute, and withdraws its listing
when it stops; a listing not reported for `LISTING_TTL_SECONDS` (a worker that died
without withdrawing) is left out of the catalogue. Five missed reports, so a worker
slowed down or cut off from the gateway for a moment is not dropped.
"""

from __future__ import annotations

import uuid

import asyncpg

from services.contract.api import ToolEntry
from services.contract.tools import ToolSpec

LISTING_TTL_SECONDS = 300.0


async def replace_catalogue(
    pool: asyncpg.Pool, key_id: uuid.UUID, worker_id: str, tools: list[ToolSpec]
) -> None:
    """A worker's report replaces everything the same key reported under its label."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(
            "DELETE FROM worker_tools WHERE key_id = $1 AND worker_id = $2", key_id, worker_id
        )
        await conn.executemany(
            """INSERT INTO worker_tools (key_id, worker_id, name, server, tool, description,
                                         input_schema, idempotent, projects)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)""",
            [
                (
                    key_id,
                    worker_id,
                    t.name,
                    t.server,
                    t.tool,
                    t.description,
                    t.input_schema,
                    t.idempotent,
                    t.projects,
                )
                for t in tools
            ],
        )


async def catalogue(pool: asyncpg.Pool, project: str) -> list[ToolEntry]:
    """Each tool offered to `project` once per way it is described (shared or limited to
    some projects counting as a description), with the workers and keys describing it
    so, reported in the last `LISTING_TTL_SECONDS`."""
    rows = await pool.fetch(
        """SELECT t.name, t.server, t.tool, t.description, t.input_schema, t.idempotent,
                  t.projects IS NULL AS shared,
                  array_agg(DISTINCT t.worker_id) AS workers, array_agg(DISTINCT k.name) AS keys
             FROM worker_tools t JOIN api_keys k ON k.id = t.key_id
            WHERE t.reported_at > now() - make_interval(secs => $2)
              AND (t.projects IS NULL OR $1 = ANY (t.projects))
            GROUP BY t.name, t.server, t.tool, t.description, t.input_schema, t.idempotent,
                     t.projects IS NULL
            ORDER BY t.name, max(t.reported_at) DESC""",
        project,
        LISTING_TTL_SECONDS,
    )
    return [
        ToolEntry.model_validate(
            {**dict(r), "workers": sorted(r["workers"]), "keys": sorted(r["keys"])}
        )
        for r in rows
    ]


async def offers(
    conn: asyncpg.Connection, key_id: uuid.UUID, worker_id: str, tool: str, project: str
) -> bool:
    """Whether the worker reporting under `key_id` and `worker_id` lists `tool` as offered
    to `project`: false for a tool it never listed (fail closed), however old the
    listing (a worker holding a lease is alive, and reports again every minute)."""
    offered: bool | None = await conn.fetchval(
        """SELECT projects IS NULL OR $4 = ANY (projects) FROM worker_tools
            WHERE key_id = $1 AND worker_id = $2 AND name = $3""",
        key_id,
        worker_id,
        tool,
        project,
    )
    return bool(offered)
