"""Versioned SQL migrations, applied in order, each exactly once.

Files are `NNNN_name.sql` beside this module. An advisory lock serialises concurrent
`ferrumdeck migrate` runs (two gateways starting together, say), and each file runs in its
own transaction together with its bookkeeping row, so a failed migration leaves nothing
half-applied.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources

import asyncpg

_LOCK_KEY = 0x46_44_4D_49_47  # "FDMIG"
_FILENAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def available() -> list[Migration]:
    found = []
    for entry in resources.files("services.gateway.db").joinpath("migrations").iterdir():
        match = _FILENAME.match(entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2], entry.read_text()))
    return sorted(found, key=lambda m: m.version)


def latest_version() -> int:
    return max(m.version for m in available())


async def _applied(conn: asyncpg.Connection) -> set[int]:
    exists = await conn.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL")
    if not exists:
        return set()
    return {row["version"] for row in await conn.fetch("SELECT version FROM schema_migrations")}


async def applied_version(conn: asyncpg.Connection) -> int:
    return max(await _applied(conn), default=0)


async def pending(conn: asyncpg.Connection) -> list[Migration]:
    """The migrations not applied yet, in order. Not only those above the newest applied:
    migrations written side by side can land in either order, and one numbered below a
    migration a database already has must still be applied."""
    applied = await _applied(conn)
    return [m for m in available() if m.version not in applied]


async def migrate(conn: asyncpg.Connection) -> list[Migration]:
    """Apply every pending migration; returns those it applied."""
    await conn.execute("SELECT pg_advisory_lock($1)", _LOCK_KEY)
    try:
        await conn.execute(
            """CREATE TABLE IF NOT EXISTS schema_migrations (
                   version integer PRIMARY KEY,
                   name text NOT NULL,
                   applied_at timestamptz NOT NULL DEFAULT now())"""
        )
        done = []
        for migration in await pending(conn):
            async with conn.transaction():
                await conn.execute(migration.sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                    migration.version,
                    migration.name,
                )
            done.append(migration)
        return done
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_KEY)
