from __future__ import annotations

import asyncio
from pathlib import Path

from services.gateway.app import create_app
from services.gateway.db.connections import connect
from services.gateway.db.migrations import (
    applied_version,
    available,
    latest_version,
    migrate,
    pending,
)
from services.gateway.settings import GatewaySettings
from tests.support.sealing import SEAL


async def test_concurrent_migrations_apply_each_file_once(empty_database: str) -> None:
    conns = [await connect(empty_database, seal=SEAL) for _ in range(3)]
    try:
        applied = await asyncio.gather(*(migrate(c) for c in conns))
        assert sorted(len(a) for a in applied) == [0, 0, len(available())]
        assert await applied_version(conns[0]) == latest_version()
        assert await migrate(conns[0]) == []
    finally:
        for conn in conns:
            await conn.close()


async def test_readyz_says_when_the_schema_is_behind(
    empty_database: str, redis_url: str, tmp_path: Path
) -> None:
    settings = GatewaySettings(database_url=empty_database, redis_url=redis_url)
    async with create_app(settings).test_app() as app:
        client = app.test_client()
        response = await client.get("/readyz")
        assert response.status_code == 503
        body = await response.get_json()
        assert body["status"] == "not_ready"
        assert any("run migrate" in problem for problem in body["problems"]), body
        conn = await connect(empty_database, seal=SEAL)
        try:
            await migrate(conn)
        finally:
            await conn.close()
        assert (await client.get("/readyz")).status_code == 200
        assert (await client.get("/healthz")).status_code == 200


async def test_a_migration_numbered_below_the_newest_applied_is_still_pending(
    empty_database: str,
) -> None:
    """Migrations written side by side land in either order: one that lands after a
    higher-numbered one must still be applied, and readiness must say it is missing."""
    conn = await connect(empty_database, seal=SEAL)
    try:
        await migrate(conn)
        assert await pending(conn) == []
        await conn.execute("DELETE FROM schema_migrations WHERE version = 2")
        (missing,) = await pending(conn)
        assert (missing.version, await applied_version(conn)) == (2, latest_version())
    finally:
        await conn.close()
