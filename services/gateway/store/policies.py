"""Policies: every `PUT` is a new immutable version; the newest one is in force.

The compiled policy in force is cached in the process, keyed by its version. A version
never changes once written, so the cache needs no invalidation and gateways stay
stateless: each one only asks the database which version is current. Reading rules back
compiles their regexes again, which for a large policy takes hundreds of milliseconds, so
it happens in a thread, never on the event loop; so does the JSON of the rules both ways
(rules travel as text, not through the pool's jsonb codec, which runs on the loop).

A version's approval settings (separation of duties) are a column of their own beside
the rules, `distinct_approver`, which deciding an approval reads in SQL
(`store.approvals`).

Every `PUT` keeps its version, so `prune` removes old ones, except those a recorded
decision or an approval names (a step's decision says which version decided it, and
must stay explainable), the version in force, and versions replaced in the last
`PRUNE_GRACE`: an authorisation reads the version in force and records its decision in
one transaction, so a decision under a just-replaced version may not be visible yet.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime, timedelta

import asyncpg
from pydantic import TypeAdapter

from services.contract.policy import ApprovalSettings, PolicyRule, PolicySet
from services.gateway.audit import Actor, record
from services.gateway.policy import CompiledPolicy

_EMPTY = CompiledPolicy([], 0)
_in_force: dict[str, CompiledPolicy] = {}
_RULES = TypeAdapter(list[PolicyRule])
PRUNE_GRACE = timedelta(minutes=10)


@dataclass(frozen=True)
class PolicyVersion:
    version: int
    rules: list[PolicyRule]
    approvals: ApprovalSettings
    created_by: str
    created_at: datetime


async def put_policy(
    conn: asyncpg.Connection, project: str, policy: PolicySet, actor: Actor
) -> PolicyVersion:
    encoded = await asyncio.to_thread(_RULES.dump_json, policy.rules, exclude_none=True)
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext('policy:' || $1))", project)
        row = await conn.fetchrow(
            """INSERT INTO policies (project, version, rules, created_by, distinct_approver)
               SELECT $1, coalesce(max(version), 0) + 1, $2::text::jsonb, $3, $4
                 FROM policies WHERE project = $1
               RETURNING version, created_by, created_at""",
            project,
            encoded.decode(),
            actor.name,
            policy.approvals.distinct_approver,
        )
        assert row is not None
        await record(
            conn,
            project,
            actor,
            "policy.updated",
            f"policy:{row['version']}",
            {"rules": len(policy.rules), **policy.approvals.model_dump(mode="json")},
        )
    return PolicyVersion(
        row["version"], list(policy.rules), policy.approvals, row["created_by"], row["created_at"]
    )


def _version(row: asyncpg.Record) -> PolicyVersion:
    rules = _RULES.validate_json(row["rules"])
    approvals = ApprovalSettings(distinct_approver=row["distinct_approver"])
    return PolicyVersion(row["version"], rules, approvals, row["created_by"], row["created_at"])


async def current_policy(
    conn: asyncpg.Connection | asyncpg.Pool, project: str
) -> PolicyVersion | None:
    row = await conn.fetchrow(
        """SELECT version, rules::text, distinct_approver, created_by, created_at FROM policies
            WHERE project = $1 ORDER BY version DESC LIMIT 1""",
        project,
    )
    return None if row is None else await asyncio.to_thread(_version, row)


async def history(
    conn: asyncpg.Pool, project: str, *, before: int | None, limit: int
) -> list[PolicyVersion]:
    rows = await conn.fetch(
        """SELECT version, rules::text, distinct_approver, created_by, created_at FROM policies
            WHERE project = $1 AND ($2::int IS NULL OR version < $2)
            ORDER BY version DESC LIMIT $3""",
        project,
        before,
        limit,
    )
    return await asyncio.to_thread(lambda: [_version(r) for r in rows])


def _compile(rules: str, version: int) -> CompiledPolicy:
    return CompiledPolicy(_RULES.validate_json(rules), version)


async def compiled_policy(conn: asyncpg.Connection, project: str) -> CompiledPolicy:
    """The project's policy in force, compiled once per version per process."""
    version = await conn.fetchval("SELECT max(version) FROM policies WHERE project = $1", project)
    if version is None:
        return _EMPTY
    cached = _in_force.get(project)
    if cached is None or cached.version != version:
        rules = await conn.fetchval(
            "SELECT rules::text FROM policies WHERE project = $1 AND version = $2",
            project,
            version,
        )
        cached = await asyncio.to_thread(_compile, rules, version)
        _in_force[project] = cached
    return cached


@dataclass(frozen=True)
class Pruned:
    pruned: list[int]
    kept: list[int]


async def prune(conn: asyncpg.Connection, project: str, before: int, actor: Actor) -> Pruned:
    """Remove the project's versions older than `before` that nothing needs (see above)."""
    async with conn.transaction():
        # The same lock as `put_policy`: the version in force cannot change meanwhile.
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext('policy:' || $1))", project)
        pruned = await conn.fetch(
            """WITH referenced AS MATERIALIZED (
                   SELECT (s.decision ->> 'policy_version')::int AS version
                     FROM steps s JOIN runs r ON r.id = s.run_id
                    WHERE r.project = $1 AND s.decision ? 'policy_version'
                   UNION
                   SELECT policy_version FROM approvals
                    WHERE project = $1 AND policy_version IS NOT NULL)
               DELETE FROM policies p
                WHERE p.project = $1 AND p.version < $2
                  AND p.version < (SELECT max(version) FROM policies WHERE project = $1)
                  AND NOT EXISTS (SELECT 1 FROM referenced WHERE referenced.version = p.version)
                  AND (SELECT n.created_at FROM policies n
                        WHERE n.project = $1 AND n.version > p.version
                        ORDER BY n.version LIMIT 1) < now() - $3::interval
            RETURNING p.version""",
            project,
            before,
            PRUNE_GRACE,
        )
        kept = await conn.fetch(
            "SELECT version FROM policies WHERE project = $1 AND version < $2 ORDER BY version",
            project,
            before,
        )
        result = Pruned(sorted(r["version"] for r in pruned), [r["version"] for r in kept])
        await record(
            conn,
            project,
            actor,
            "policy.pruned",
            "policies",
            {"before": before, "pruned": result.pruned, "kept": len(result.kept)},
        )
    return result
