"""Bearer-key authentication.

Keys look like `fd_<random>`; only their SHA-256 is stored. Keys are 256 bits of
randomness, so a fast hash is enough: there is nothing to brute-force. Each blueprint
declares which role it admits; worker keys reach only the worker API, and no other key
reaches it.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass
from enum import StrEnum

import asyncpg
from quart import Blueprint, g, request

from services.gateway.errors import Unauthorized
from services.gateway.resources import resources

KEY_PREFIX = "fd_"


class Role(StrEnum):
    ADMIN = "admin"
    WORKER = "worker"


@dataclass(frozen=True)
class Principal:
    key_id: uuid.UUID
    name: str
    role: Role


def new_secret() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


async def _principal_for(pool: asyncpg.Pool, secret: str) -> Principal | None:
    row = await pool.fetchrow(
        "SELECT id, name, role FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL",
        hash_secret(secret),
    )
    if row is None:
        return None
    return Principal(row["id"], row["name"], Role(row["role"]))


def require_role(blueprint: Blueprint, *roles: Role) -> None:
    """Guard every route of `blueprint`: a valid key of one of `roles`, or 401."""

    @blueprint.before_request
    async def _authenticate() -> None:
        header = request.headers.get("Authorization", "")
        scheme, _, secret = header.partition(" ")
        if scheme.lower() != "bearer" or not secret.startswith(KEY_PREFIX):
            raise Unauthorized("send an API key as 'Authorization: Bearer fd_…'")
        principal = await _principal_for(resources().pool, secret.strip())
        if principal is None or principal.role not in roles:
            raise Unauthorized("API key is unknown, revoked, or not allowed here")
        g.principal = principal
