"""Agents: immutable versions, numbered from 1 per name."""

from __future__ import annotations

from typing import Any

import asyncpg

from services.contract.api import Agent, AgentCreate

_COLUMNS = "name, version, model, system_prompt, tools, budget, params, created_at"


def _agent(row: asyncpg.Record) -> Agent:
    return Agent.model_validate(dict(row))


async def create_version(conn: asyncpg.Connection, spec: AgentCreate) -> Agent:
    """Append the next version of `spec.name`; concurrent registrations queue on a lock."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext('agent:' || $1))", spec.name)
        row = await conn.fetchrow(
            f"""INSERT INTO agents (name, version, model, system_prompt, tools, budget, params)
                SELECT $1, coalesce(max(version), 0) + 1, $2, $3, $4, $5, $6
                  FROM agents WHERE name = $1
                RETURNING {_COLUMNS}""",
            spec.name,
            spec.model,
            spec.system_prompt,
            spec.tools,
            spec.budget.model_dump(exclude_none=True),
            spec.params.model_dump(exclude_none=True),
        )
    assert row is not None
    return _agent(row)


async def get_version(
    conn: asyncpg.Connection | asyncpg.Pool, name: str, version: int | None
) -> Agent | None:
    if version is None:
        row = await conn.fetchrow(
            f"SELECT {_COLUMNS} FROM agents WHERE name = $1 ORDER BY version DESC LIMIT 1", name
        )
    else:
        row = await conn.fetchrow(
            f"SELECT {_COLUMNS} FROM agents WHERE name = $1 AND version = $2", name, version
        )
    return None if row is None else _agent(row)


async def list_latest(conn: asyncpg.Pool, *, after: str | None, limit: int) -> list[Agent]:
    """The newest version of each agent, by name."""
    rows = await conn.fetch(
        f"""SELECT DISTINCT ON (name) {_COLUMNS} FROM agents
             WHERE $1::text IS NULL OR name > $1
             ORDER BY name, version DESC
             LIMIT $2""",
        after,
        limit,
    )
    return [_agent(r) for r in rows]


async def list_versions(
    conn: asyncpg.Pool, name: str, *, before: int | None, limit: int
) -> list[Agent]:
    rows = await conn.fetch(
        f"""SELECT {_COLUMNS} FROM agents
             WHERE name = $1 AND ($2::int IS NULL OR version < $2)
             ORDER BY version DESC LIMIT $3""",
        name,
        before,
        limit,
    )
    return [_agent(r) for r in rows]


def same_definition(agent: Agent, spec: AgentCreate) -> bool:
    """Whether registering `spec` would only repeat `agent`'s latest version."""
    fields: dict[str, Any] = agent.model_dump(include=set(AgentCreate.model_fields))
    return fields == spec.model_dump()
