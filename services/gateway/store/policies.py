"""Policies: every `PUT` is a new immutable version; the newest one is in force.

The compiled policy in force is cached in the process, keyed by its version. A version
never changes once written, so the cache needs no invalidation and gateways stay
stateless: each one only asks the database which version is current. Reading rules back
compiles their regexes again, which for a large policy takes hundreds of milliseconds, so
it happens in a thread, never on the event loop.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from services.contract.policy import PolicyRule, PolicySet
from services.gateway.audit import Actor, record
from services.gateway.policy import CompiledPolicy

_EMPTY = CompiledPolicy([], 0)
_in_force: dict[str, CompiledPolicy] = {}


@dataclass(frozen=True)
class PolicyVersion:
    version: int
    rules: list[PolicyRule]
    created_by: str
    created_at: datetime


async def put_policy(
    conn: asyncpg.Connection, project: str, policy: PolicySet, actor: Actor
) -> PolicyVersion:
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext('policy:' || $1))", project)
        row = await conn.fetchrow(
            """INSERT INTO policies (project, version, rules, created_by)
               SELECT $1, coalesce(max(version), 0) + 1, $2, $3 FROM policies WHERE project = $1
               RETURNING version, created_by, created_at""",
            project,
            [rule.model_dump(mode="json", exclude_none=True) for rule in policy.rules],
            actor.name,
        )
        assert row is not None
        await record(
            conn,
            project,
            actor,
            "policy.updated",
            f"policy:{row['version']}",
            {"rules": len(policy.rules)},
        )
    return PolicyVersion(row["version"], list(policy.rules), row["created_by"], row["created_at"])


def _version(row: asyncpg.Record) -> PolicyVersion:
    rules = [PolicyRule.model_validate(rule) for rule in row["rules"]]
    return PolicyVersion(row["version"], rules, row["created_by"], row["created_at"])


async def current_policy(
    conn: asyncpg.Connection | asyncpg.Pool, project: str
) -> PolicyVersion | None:
    row = await conn.fetchrow(
        """SELECT version, rules, created_by, created_at FROM policies WHERE project = $1
            ORDER BY version DESC LIMIT 1""",
        project,
    )
    return None if row is None else await asyncio.to_thread(_version, row)


async def history(
    conn: asyncpg.Pool, project: str, *, before: int | None, limit: int
) -> list[PolicyVersion]:
    rows = await conn.fetch(
        """SELECT version, rules, created_by, created_at FROM policies
            WHERE project = $1 AND ($2::int IS NULL OR version < $2)
            ORDER BY version DESC LIMIT $3""",
        project,
        before,
        limit,
    )
    return await asyncio.to_thread(lambda: [_version(r) for r in rows])


def _compile(rules: list[dict[str, object]], version: int) -> CompiledPolicy:
    return CompiledPolicy([PolicyRule.model_validate(r) for r in rules], version)


async def compiled_policy(conn: asyncpg.Connection, project: str) -> CompiledPolicy:
    """The project's policy in force, compiled once per version per process."""
    version = await conn.fetchval("SELECT max(version) FROM policies WHERE project = $1", project)
    if version is None:
        return _EMPTY
    cached = _in_force.get(project)
    if cached is None or cached.version != version:
        rules = await conn.fetchval(
            "SELECT rules FROM policies WHERE project = $1 AND version = $2", project, version
        )
        cached = await asyncio.to_thread(_compile, rules, version)
        _in_force[project] = cached
    return cached
