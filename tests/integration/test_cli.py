"""The `ferrumdeck` command's administrative subcommands, against a real database."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import asyncpg
import pytest

from services.gateway.app import create_app
from services.gateway.db.connections import connect
from services.gateway.db.migrations import migrate
from services.gateway.settings import GatewaySettings
from tests.support.sealing import SEAL


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


async def test_keys_create_finds_the_dev_stacks_database_by_itself(
    empty_database: str, tmp_path: Path
) -> None:
    """Run from a checkout while `make dev` runs: no FERRUMDECK_DATABASE_URL needed."""
    conn = await connect(empty_database, seal=SEAL)
    try:
        await migrate(conn)
    finally:
        await conn.close()
    (tmp_path / ".ferrumdeck").mkdir()
    (tmp_path / ".ferrumdeck" / "server.env").write_text(
        f"FERRUMDECK_DATABASE_URL={empty_database}\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "FERRUMDECK_DATABASE_URL"}
    created = await asyncio.to_thread(
        subprocess.run,
        [
            sys.executable,
            "-m",
            "services.cli.main",
            "keys",
            "create",
            "--project",
            "acme",
            "--name",
            "first",
            "--role",
            "admin",
        ],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert created.returncode == 0, created.stderr
    assert "project 'acme'" in created.stdout
    conn = await asyncpg.connect(empty_database)
    try:
        assert await conn.fetchval("SELECT project FROM api_keys WHERE name = 'first'") == "acme"
    finally:
        await conn.close()


async def test_migrate_and_set_quota_find_the_dev_stacks_database_by_itself(
    empty_database: str, tmp_path: Path
) -> None:
    """`migrate` used to go to the default database (and die in a traceback) while `keys`
    found the dev stack's; `projects set-quota` writes the operator's limits there."""
    (tmp_path / ".ferrumdeck").mkdir()
    (tmp_path / ".ferrumdeck" / "server.env").write_text(
        f"FERRUMDECK_DATABASE_URL={empty_database}\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "FERRUMDECK_DATABASE_URL"}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "services.cli.main", *args],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    migrated = await asyncio.to_thread(cli, "migrate")
    assert migrated.returncode == 0, migrated.stderr
    assert "applied 0001_initial" in migrated.stdout
    quota = await asyncio.to_thread(
        cli, "projects", "set-quota", "acme", "--max-queued", "100", "--rate", "2.5"
    )
    assert quota.returncode == 0, quota.stderr
    assert quota.stdout.strip() == "project 'acme': max queued 100, runs per second 2.5"
    refused = await asyncio.to_thread(cli, "projects", "set-quota", "acme", "--max-running", "0")
    assert refused.returncode == 2
    assert "Traceback" not in refused.stderr
    assert "max_running" in refused.stderr
    conn = await asyncpg.connect(empty_database)
    try:
        row = await conn.fetchrow(
            "SELECT max_queued, max_running, runs_per_second FROM projects WHERE name = 'acme'"
        )
        audited = await conn.fetchval(
            "SELECT count(*) FROM audit_events WHERE action = 'project.quota_set'"
        )
    finally:
        await conn.close()
    assert tuple(row) == (100, None, 2.5)
    assert audited == 1


@pytest.mark.parametrize(
    ("text", "says"),
    [
        (None, "cannot read the MCP servers file"),
        ('{"mcpServers": {"notes": {"args": []}}}', "give exactly one of `command`"),
    ],
)
def test_a_bad_mcp_servers_file_is_one_line_not_a_traceback(
    tmp_path: Path, text: str | None, says: str
) -> None:
    servers = tmp_path / "mcp.json"
    if text is not None:
        servers.write_text(text)
    result = subprocess.run(
        [sys.executable, "-m", "services.cli.main", "worker"],
        env={
            **os.environ,
            "FERRUMDECK_ENV_FILE": "",
            "FERRUMDECK_WORKER_TOKEN": "fd_unused",
            "FERRUMDECK_MCP_SERVERS": str(servers),
            "FERRUMDECK_METRICS_PORT": "0",
        },
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert says in result.stderr.strip().splitlines()[-1]


def test_audit_verify_of_a_project_that_does_not_exist_is_an_error(database_url: str) -> None:
    """It used to answer "intact, 0 events": a mistyped name read as a clean chain."""
    result = _cli(database_url, "audit", "verify", "--project", "nosuch")
    assert result.returncode == 2
    assert "no project 'nosuch'" in result.stderr
    assert "default" in result.stderr, "the projects there are are named"
    assert _cli(database_url, "audit", "verify", "--project", "default").returncode == 0
