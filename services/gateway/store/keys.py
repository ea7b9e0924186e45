"""API keys: created with their secret shown once, stored as a hash."""

from __future__ import annotations

import uuid

import asyncpg

from services.contract.ids import uuid7
from services.gateway.auth import Role, hash_secret, new_secret


async def create_key(
    conn: asyncpg.Connection | asyncpg.Pool, name: str, role: Role
) -> tuple[uuid.UUID, str]:
    """Returns the key id and its secret; the secret is not recoverable afterwards."""
    key_id = uuid7()
    secret = new_secret()
    await conn.execute(
        "INSERT INTO api_keys (id, name, role, key_hash) VALUES ($1, $2, $3, $4)",
        key_id,
        name,
        role.value,
        hash_secret(secret),
    )
    return key_id, secret


async def key_is_valid(conn: asyncpg.Connection | asyncpg.Pool, secret: str) -> bool:
    found = await conn.fetchval(
        "SELECT 1 FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL", hash_secret(secret)
    )
    return found is not None
