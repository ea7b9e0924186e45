"""API keys: created with their secret shown once, stored as a hash, revoked at once.

Human keys belong to a project (created with it if new); worker keys belong to none, and
their creation and revocation are recorded in the platform's own audit chain.

Gateways remember valid keys for a few seconds (`key_cache`); a revocation reaches
every gateway's cache through a notification a trigger sends on its commit.
"""

from __future__ import annotations

import uuid

import asyncpg

from services.contract.api import KeyInfo, Role
from services.contract.ids import uuid7
from services.gateway.audit import Actor, record
from services.gateway.auth import hash_secret, new_secret
from services.gateway.errors import NotFound
from services.gateway.key_cache import KeyCache

PLATFORM = "_platform"


async def create_key(
    conn: asyncpg.Connection,
    name: str,
    role: Role,
    project: str | None,
    actor: Actor,
) -> tuple[KeyInfo, str]:
    """Returns the key and its secret; the secret is not recoverable afterwards."""
    scope = None if role == Role.WORKER else project
    async with conn.transaction():
        if scope is not None:
            created = await conn.fetchval(
                "INSERT INTO projects (name) VALUES ($1) ON CONFLICT DO NOTHING RETURNING name",
                scope,
            )
            if created:
                await record(conn, scope, actor, "project.created", f"project:{scope}")
        secret = new_secret()
        row = await conn.fetchrow(
            """INSERT INTO api_keys (id, name, role, key_hash, project)
               VALUES ($1, $2, $3, $4, $5)
               RETURNING id, name, role, project, created_at, revoked_at""",
            uuid7(),
            name,
            role.value,
            hash_secret(secret),
            scope,
        )
        assert row is not None
        await record(
            conn,
            scope or PLATFORM,
            actor,
            "key.created",
            f"key:{row['id']}",
            {"name": name, "role": role.value},
        )
    return KeyInfo.model_validate(dict(row)), secret


async def list_keys(
    pool: asyncpg.Pool, project: str, *, after: uuid.UUID | None, limit: int
) -> list[KeyInfo]:
    """The project's keys, revoked ones too, oldest first (ids are UUIDv7)."""
    rows = await pool.fetch(
        """SELECT id, name, role, project, created_at, revoked_at FROM api_keys
            WHERE project = $1 AND ($2::uuid IS NULL OR id > $2)
            ORDER BY id LIMIT $3""",
        project,
        after,
        limit,
    )
    return [KeyInfo.model_validate(dict(r)) for r in rows]


async def revoke_key(
    pool: asyncpg.Pool,
    project: str,
    key_id: uuid.UUID,
    actor: Actor,
    *,
    cache: KeyCache | None = None,
) -> None:
    """The very next request with the key is refused, on every gateway: this one forgets
    the key once the revocation commits, the others are told by the notification the
    commit sends (a trigger's, migration 0007, so a revocation made in SQL is told too)."""
    async with pool.acquire() as conn:
        async with conn.transaction():
            row = await conn.fetchrow(
                """UPDATE api_keys SET revoked_at = coalesce(revoked_at, now())
                    WHERE project = $1 AND id = $2 RETURNING name, role""",
                project,
                key_id,
            )
            if row is None:
                raise NotFound(f"no key {key_id}")
            await record(
                conn, project, actor, "key.revoked", f"key:{key_id}", {"name": row["name"]}
            )
        # Right after the commit, before the caller hears of it (the notification reaches
        # this process too, but later).
        if cache is not None:
            cache.forget(key_id)


async def key_is_valid(conn: asyncpg.Connection | asyncpg.Pool, secret: str) -> bool:
    found = await conn.fetchval(
        "SELECT 1 FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL", hash_secret(secret)
    )
    return found is not None
