"""Per-project quotas: set by an operator on the machine, read by every gateway.

They live on the project's row and change rarely, so gateways read them with the backlog
they check them against (once a second, `backpressure.py`) rather than per request.
Setting one is recorded in the project's own audit chain.
"""

from __future__ import annotations

import asyncpg

from services.contract.queue import ProjectQuota
from services.gateway.audit import Actor, record


async def set_quota(
    conn: asyncpg.Connection, project: str, quota: ProjectQuota, actor: Actor
) -> ProjectQuota:
    """Replace the project's quotas (creating the project if new); returns them."""
    async with conn.transaction():
        created = await conn.fetchval(
            "INSERT INTO projects (name) VALUES ($1) ON CONFLICT DO NOTHING RETURNING name",
            project,
        )
        if created:
            await record(conn, project, actor, "project.created", f"project:{project}")
        await conn.execute(
            """UPDATE projects SET max_queued = $2, max_running = $3, runs_per_second = $4
                WHERE name = $1""",
            project,
            quota.max_queued,
            quota.max_running,
            quota.runs_per_second,
        )
        await record(
            conn,
            project,
            actor,
            "project.quota_set",
            f"project:{project}",
            quota.model_dump(),
        )
    return quota


async def quotas(pool: asyncpg.Pool) -> dict[str, ProjectQuota]:
    """Every project that has a quota, with them."""
    rows = await pool.fetch(
        """SELECT name, max_queued, max_running, runs_per_second FROM projects
            WHERE max_queued IS NOT NULL OR max_running IS NOT NULL
               OR runs_per_second IS NOT NULL"""
    )
    return {
        row["name"]: ProjectQuota(
            max_queued=row["max_queued"],
            max_running=row["max_running"],
            runs_per_second=row["runs_per_second"],
        )
        for row in rows
    }
