"""The `ferrumdeck` command's administrative subcommands, against a real database."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import asyncpg

from services.gateway.app import create_app
from services.gateway.settings import GatewaySettings


def _cli(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "FERRUMDECK_DATABASE_URL": database_url}
    return subprocess.run(
        [sys.executable, "-m", "services.cli.main", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def test_cli_migrates_and_creates_a_working_key(empty_database: str, redis_url: str) -> None:
    first = await asyncio.to_thread(_cli, empty_database, "migrate")
    assert first.returncode == 0, first.stderr
    assert "applied 0001_initial" in first.stdout
    again = await asyncio.to_thread(_cli, empty_database, "migrate")
    assert "applied" not in again.stdout.replace("database schema", "")

    created = await asyncio.to_thread(
        _cli, empty_database, "keys", "create", "--name", "ops", "--role", "admin"
    )
    assert created.returncode == 0, created.stderr
    secret = created.stdout.strip().splitlines()[-1]
    assert secret.startswith("fd_")
    settings = GatewaySettings(database_url=empty_database, redis_url=redis_url)
    async with create_app(settings).test_app() as app:
        response = await app.test_client().get(
            "/v1/runs", headers={"Authorization": f"Bearer {secret}"}
        )
        assert response.status_code == 200
    conn = await asyncpg.connect(empty_database)
    try:
        stored = await conn.fetchval("SELECT key_hash FROM api_keys WHERE name = 'ops'")
    finally:
        await conn.close()
    assert secret not in stored


def test_bad_configuration_is_named(empty_database: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "services.cli.main", "gateway"],
        env={**os.environ, "FERRUMDECK_PORT": "not-a-port"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "FERRUMDECK_PORT: Input should be a valid integer" in result.stderr
