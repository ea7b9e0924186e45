"""Agents: immutable versions, numbered from 1 per name.

Inside a running gateway the caller hands in the app's `agent_cache`, and `get_version`
answers from it when it can; the CLI, the dev stack and benchmarks pass none and read
PostgreSQL. A new version is announced to every gateway on commit by a trigger
(migration 0007).
"""

from __future__ import annotations

from typing import Any

import asyncpg

from services.contract.api import Agent, AgentCreate
from services.gateway.agent_cache import AgentCache
from services.gateway.audit import Actor, record

_COLUMNS = "name, version, model, system_prompt, tools, budget, params, history, created_at"


def _agent(row: asyncpg.Record) -> Agent:
    return Agent.model_validate(dict(row))


async def create_version(
    conn: asyncpg.Connection,
    project: str,
    spec: AgentCreate,
    actor: Actor,
    *,
    cache: AgentCache | None = None,
) -> Agent:
    """Append the next version of `spec.name`; concurrent registrations queue on a lock."""
    async with conn.transaction():
        await conn.execute(
            "SELECT pg_advisory_xact_lock(hashtext('agent:' || $1 || '/' || $2))",
            project,
            spec.name,
        )
        row = await conn.fetchrow(
            f"""INSERT INTO agents (project, name, version, model, system_prompt, tools,
                                    budget, params, history)
                SELECT $1, $2, coalesce(max(version), 0) + 1, $3, $4, $5, $6, $7, $8
                  FROM agents WHERE project = $1 AND name = $2
                RETURNING {_COLUMNS}""",
            project,
            spec.name,
            spec.model,
            spec.system_prompt,
            spec.tools,
            spec.budget.model_dump(exclude_none=True),
            spec.params.model_dump(exclude_none=True),
            None if spec.history is None else spec.history.model_dump(),
        )
        assert row is not None
        await record(
            conn,
            project,
            actor,
            "agent.created",
            f"agent:{spec.name}@{row['version']}",
            {"model": spec.model, "tools": spec.tools},
        )
    agent = _agent(row)
    if cache is not None:
        cache.created(project, agent)
    return agent


async def get_version(
    conn: asyncpg.Connection | asyncpg.Pool,
    project: str,
    name: str,
    version: int | None,
    *,
    cache: AgentCache | None = None,
) -> Agent | None:
    """`name@version`, or the latest version of `name` for None; None if there is none.

    The result may be shared with other requests: do not change it."""
    if cache is None:
        return await _read_version(conn, project, name, version)
    return await cache.version(
        project, name, version, lambda: _read_version(conn, project, name, version)
    )


async def _read_version(
    conn: asyncpg.Connection | asyncpg.Pool, project: str, name: str, version: int | None
) -> Agent | None:
    row = await conn.fetchrow(
        f"""SELECT {_COLUMNS} FROM agents
             WHERE project = $1 AND name = $2 AND ($3::int IS NULL OR version = $3)
             ORDER BY version DESC LIMIT 1""",
        project,
        name,
        version,
    )
    return None if row is None else _agent(row)


async def list_latest(
    conn: asyncpg.Pool, project: str, *, after: str | None, limit: int
) -> list[Agent]:
    """The newest version of each agent, by name."""
    rows = await conn.fetch(
        f"""SELECT DISTINCT ON (name) {_COLUMNS} FROM agents
             WHERE project = $1 AND ($2::text IS NULL OR name > $2)
             ORDER BY name, version DESC
             LIMIT $3""",
        project,
        after,
        limit,
    )
    return [_agent(r) for r in rows]


async def list_versions(
    conn: asyncpg.Pool, project: str, name: str, *, before: int | None, limit: int
) -> list[Agent]:
    rows = await conn.fetch(
        f"""SELECT {_COLUMNS} FROM agents
             WHERE project = $1 AND name = $2 AND ($3::int IS NULL OR version < $3)
             ORDER BY version DESC LIMIT $4""",
        project,
        name,
        before,
        limit,
    )
    return [_agent(r) for r in rows]


def same_definition(agent: Agent, spec: AgentCreate) -> bool:
    """Whether registering `spec` would only repeat `agent`'s latest version."""
    fields: dict[str, Any] = agent.model_dump(include=set(AgentCreate.model_fields))
    return fields == spec.model_dump()
