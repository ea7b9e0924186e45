"""PostgreSQL and Redis for the test suite: the machine's own when they answer on their
standard ports, embedded ones otherwise. Each run gets a throw-away database and stream
prefix, removed at the end."""

from __future__ import annotations

import contextlib
import socket
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
from redis.asyncio import Redis
from redis.exceptions import RedisError

from services.devstack.embedded import EmbeddedPostgres, EmbeddedValkey

SYSTEM_POSTGRES = "postgresql://postgres@127.0.0.1:5432/postgres"
SYSTEM_REDIS = "redis://127.0.0.1:6379/0"


def _listening(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


async def _postgres_answers(dsn: str) -> bool:
    try:
        conn = await asyncpg.connect(dsn, timeout=3)
    except (OSError, asyncpg.PostgresError, TimeoutError):
        return False
    await conn.close()
    return True


async def _redis_answers(url: str) -> bool:
    client = Redis.from_url(url, socket_connect_timeout=1)
    try:
        return bool(await client.ping())
    except (OSError, RedisError):
        return False
    finally:
        await client.aclose()


@contextlib.asynccontextmanager
async def postgres_admin_dsn(scratch: Path) -> AsyncIterator[str]:
    if _listening("127.0.0.1", 5432) and await _postgres_answers(SYSTEM_POSTGRES):
        yield SYSTEM_POSTGRES
        return
    embedded = EmbeddedPostgres(scratch / "postgres")
    embedded.start()
    try:
        yield embedded.dsn("postgres")
    finally:
        embedded.stop()


@contextlib.asynccontextmanager
async def redis_url(scratch: Path) -> AsyncIterator[str]:
    if _listening("127.0.0.1", 6379) and await _redis_answers(SYSTEM_REDIS):
        yield SYSTEM_REDIS
        return
    embedded = EmbeddedValkey(scratch / "valkey")
    url = embedded.start()
    try:
        yield url
    finally:
        embedded.stop()


def database_dsn(admin_dsn: str, database: str) -> str:
    base, _, query = admin_dsn.partition("?")
    base = base.rsplit("/", 1)[0] + "/" + database
    return f"{base}?{query}" if query else base


@contextlib.asynccontextmanager
async def throwaway_database(admin_dsn: str) -> AsyncIterator[str]:
    name = f"fdtest_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(admin_dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        yield database_dsn(admin_dsn, name)
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


def unique_prefix() -> str:
    return f"fdtest:{uuid.uuid4().hex[:12]}"


async def delete_prefix(url: str, prefix: str) -> None:
    client = Redis.from_url(url)
    try:
        keys = [key async for key in client.scan_iter(match=f"{prefix}:*")]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()
