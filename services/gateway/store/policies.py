"""Policies: every `PUT` is a new immutable version; the newest one is in force.

The compiled policy in force is cached in the process, keyed by its version. A version
never changes once written, so the cache needs no invalidation and gateways stay
stateless: each one only asks the database which version is current.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg

from services.contract.policy import PolicyRule, PolicySet
from services.gateway.policy import CompiledPolicy

_EMPTY = CompiledPolicy([], 0)
_in_force: list[CompiledPolicy] = [_EMPTY]


@dataclass(frozen=True)
class PolicyVersion:
    version: int
    rules: list[PolicyRule]
    created_by: str
    created_at: datetime


async def put_policy(conn: asyncpg.Connection, policy: PolicySet, created_by: str) -> PolicyVersion:
    async with conn.transaction():
        await conn.execute("LOCK TABLE policies IN SHARE ROW EXCLUSIVE MODE")
        row = await conn.fetchrow(
            """INSERT INTO policies (version, rules, created_by)
               SELECT coalesce(max(version), 0) + 1, $1, $2 FROM policies
               RETURNING version, created_by, created_at""",
            [rule.model_dump(mode="json", exclude_none=True) for rule in policy.rules],
            created_by,
        )
    assert row is not None
    return PolicyVersion(row["version"], list(policy.rules), row["created_by"], row["created_at"])


def _version(row: asyncpg.Record) -> PolicyVersion:
    rules = [PolicyRule.model_validate(rule) for rule in row["rules"]]
    return PolicyVersion(row["version"], rules, row["created_by"], row["created_at"])


async def current_policy(conn: asyncpg.Connection | asyncpg.Pool) -> PolicyVersion | None:
    row = await conn.fetchrow(
        "SELECT version, rules, created_by, created_at FROM policies ORDER BY version DESC LIMIT 1"
    )
    return None if row is None else _version(row)


async def history(conn: asyncpg.Pool, *, before: int | None, limit: int) -> list[PolicyVersion]:
    rows = await conn.fetch(
        """SELECT version, rules, created_by, created_at FROM policies
            WHERE $1::int IS NULL OR version < $1 ORDER BY version DESC LIMIT $2""",
        before,
        limit,
    )
    return [_version(r) for r in rows]


async def compiled_policy(conn: asyncpg.Connection) -> CompiledPolicy:
    """The policy in force, compiled once per version per process."""
    version = await conn.fetchval("SELECT max(version) FROM policies")
    if version is None:
        return _EMPTY
    cached = _in_force[0]
    if cached.version != version:
        rules = await conn.fetchval("SELECT rules FROM policies WHERE version = $1", version)
        cached = CompiledPolicy([PolicyRule.model_validate(r) for r in rules], version)
        _in_force[0] = cached
    return cached
