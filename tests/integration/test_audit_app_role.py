"""Least privilege: the gateway's role appends to the audit trail and reads it, and is
refused everything that would rewrite it — the grants `ferrumdeck migrate --app-role`
makes, which every gateway in the tests runs with (tests/conftest.py)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from services.gateway.db.app_role import as_role
from services.gateway.db.connections import connect
from tests.support.sealing import SEAL


@pytest.fixture
async def as_gateway(app_database_url: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await connect(app_database_url, seal=SEAL)
    yield conn
    await conn.close()


async def _appended(conn: asyncpg.Connection) -> int:
    """An event the role writes by hand, in a project of its own: no gateway sealed it,
    so whichever chainer links it reports it, and only there."""
    event_id: int = await conn.fetchval(
        """INSERT INTO audit_events (project, actor, actor_kind, action, target)
           VALUES ($1, 'intruder', 'system', 'approval.approved', 'run:x') RETURNING id""",
        f"intruded-{uuid.uuid4().hex[:8]}",
    )
    return event_id


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE audit_events SET actor = 'someone else' WHERE id = $1",
        "DELETE FROM audit_events WHERE id = $1",
        "UPDATE audit_chain SET hash = 'x' WHERE event_id = $1",
        "DELETE FROM audit_chain WHERE event_id = $1",
    ],
)
async def test_the_gateways_role_may_append_but_not_change_or_delete_audit_rows(
    as_gateway: asyncpg.Connection, statement: str
) -> None:
    """Before, the role owned the tables: it could delete an event it had just inserted
    before the chainer linked it, and nothing would show."""
    event_id = await _appended(as_gateway)
    assert await as_gateway.fetchval("SELECT actor FROM audit_events WHERE id = $1", event_id)
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await as_gateway.execute(statement, event_id)


@pytest.mark.parametrize(
    "statement",
    [
        "TRUNCATE audit_events CASCADE",
        "TRUNCATE audit_chain",
        "ALTER TABLE audit_events DISABLE TRIGGER audit_events_append_only",
        "ALTER TABLE audit_chain DISABLE TRIGGER ALL",
        "SET session_replication_role = replica",
        "DROP TRIGGER audit_events_append_only ON audit_events",
    ],
)
async def test_the_gateways_role_cannot_truncate_or_lift_the_triggers(
    as_gateway: asyncpg.Connection, statement: str
) -> None:
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await as_gateway.execute(statement)


def _migrate(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "services.cli.main", "migrate", *args],
        env={**os.environ, "FERRUMDECK_DATABASE_URL": database_url},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


async def test_migrate_makes_the_app_role_again_and_again_and_it_runs_a_gateways_work(
    empty_database: str,
) -> None:
    role = f"fdmig_{uuid.uuid4().hex[:8]}"
    try:
        first = await asyncio.to_thread(_migrate, empty_database, "--app-role", role)
        assert first.returncode == 0, first.stderr
        assert f"role '{role}'" in first.stdout
        again = await asyncio.to_thread(_migrate, empty_database, "--app-role", role)
        assert again.returncode == 0, again.stderr
        assert "applied" not in again.stdout

        conn = await connect(as_role(empty_database, role), seal=SEAL)
        try:
            await conn.execute("INSERT INTO projects (name) VALUES ('granted')")
            await _appended(conn)
            assert await conn.fetchval("SELECT count(*) FROM audit_events") == 1
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute("DELETE FROM audit_events")
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute("DELETE FROM schema_migrations")
        finally:
            await conn.close()
    finally:
        admin = await connect(empty_database, seal=SEAL)
        try:
            if await admin.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", role):
                await admin.execute(f'DROP OWNED BY "{role}"')
                await admin.execute(f'DROP ROLE "{role}"')
        finally:
            await admin.close()


async def test_migrate_says_in_one_line_what_it_cannot_do(empty_database: str) -> None:
    unreachable = await asyncio.to_thread(
        _migrate, empty_database, "--database-url", "postgresql://ops:s3cret@127.0.0.1:1/none"
    )
    assert unreachable.returncode == 2
    assert unreachable.stderr.count("\n") == 1
    assert "127.0.0.1:1" in unreachable.stderr
    assert "s3cret" not in unreachable.stderr
    badly_named = await asyncio.to_thread(_migrate, empty_database, "--app-role", "Robert'); --")
    assert badly_named.returncode == 2
    assert "role name" in badly_named.stderr
    assert "Traceback" not in badly_named.stderr
