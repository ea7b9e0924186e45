"""Keyed links: the database's superuser, holding no audit key, cannot rewrite history
and recompute the chain; keys rotate, and chains begun unkeyed stay verifiable."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import asyncpg
import pytest

from services.contract.audit import AuditEvent, canonical_json
from services.contract.audit_keys import AuditKeys
from services.gateway.audit import Actor, link_pending, record, verify_project
from services.gateway.db.connections import connect, create_pool
from services.gateway.db.migrations import migrate
from services.gateway.settings import GatewaySettings
from services.gateway.store.audit_trail import EVENT_COLUMNS, to_event
from tests.support.sealing import SEAL

KEYS = GatewaySettings().audit_keys()
OTHER = AuditKeys.of(["another-audit-key-" + "o" * 32])


async def _project(db: asyncpg.Pool, events: int, keys: AuditKeys | None = KEYS) -> str:
    """A project of its own with `events` events, linked under `keys` (None: not linked)."""
    name = f"keyed-{uuid.uuid4().hex[:8]}"
    async with db.acquire() as conn:
        await conn.execute("INSERT INTO projects (name) VALUES ($1)", name)
        for n in range(events):
            await record(conn, name, Actor.system("tests"), "agent.created", f"agent:a{n}@1")
    if keys is not None:
        await link_pending(db, keys)
    return name


async def _chain(conn: asyncpg.Connection, project: str) -> list[AuditEvent]:
    rows = await conn.fetch(
        f"""SELECT {EVENT_COLUMNS} FROM audit_chain c JOIN audit_events e ON e.id = c.event_id
             WHERE c.project = $1 ORDER BY c.seq""",
        project,
    )
    return [to_event(r) for r in rows]


async def _as_superuser(
    database_url: str, change: Callable[[asyncpg.Connection], Awaitable[None]]
) -> None:
    """Behind the database's back: triggers off, as its superuser can."""
    conn = await connect(database_url, seal=SEAL)
    try:
        async with conn.transaction():
            await conn.execute("SET LOCAL session_replication_role = replica")
            await change(conn)
    finally:
        await conn.close()


async def _relink_unkeyed(
    conn: asyncpg.Connection,
    project: str,
    from_seq: int,
    *,
    keep_key_id: bool,
    until_seq: int | None = None,
) -> None:
    """Recompute the links from `from_seq` (to the end, or `until_seq`) as plain
    SHA-256, the way the chain was before links were keyed."""
    chain = await _chain(conn, project)
    prev = chain[from_seq - 2].hash if from_seq > 1 else "0" * 64
    for event in chain[from_seq - 1 : until_seq]:
        digest = hashlib.sha256(str(prev).encode() + canonical_json(event)).hexdigest()
        await conn.execute(
            """UPDATE audit_chain SET prev_hash = $2, hash = $3,
                      key_id = CASE WHEN $4 THEN key_id END WHERE event_id = $1""",
            event.id,
            prev,
            digest,
            keep_key_id,
        )
        prev = digest


@pytest.mark.parametrize("keep_key_id", [True, False], ids=["same-key-id", "unkeyed"])
async def test_an_edit_with_every_later_link_recomputed_is_found_at_the_edit(
    db: asyncpg.Pool, database_url: str, keep_key_id: bool
) -> None:
    project = await _project(db, 6)
    assert (await verify_project(db, project, KEYS)).intact

    async def rewrite(conn: asyncpg.Connection) -> None:
        third = await conn.fetchval(
            "SELECT event_id FROM audit_chain WHERE project = $1 AND seq = 3", project
        )
        await conn.execute(
            """UPDATE audit_events SET actor = 'someone else', details = '{"x": 1}'
                WHERE id = $1""",
            third,
        )
        await _relink_unkeyed(conn, project, 3, keep_key_id=keep_key_id)

    await _as_superuser(database_url, rewrite)
    found = await verify_project(db, project, KEYS)
    assert found.intact is False
    assert found.first_broken is not None
    assert found.first_broken.seq == 3
    assert ("rewritten" if not keep_key_id else "altered") in found.first_broken.reason


async def test_a_link_made_under_another_key_is_not_taken_for_one_made_under_ours(
    db: asyncpg.Pool, database_url: str
) -> None:
    """Whoever holds some other key (a test's, an old deployment's) cannot pass links
    made under it off as ours: the key id names the key, the HMAC proves it."""
    project = await _project(db, 4)

    async def relink(conn: asyncpg.Connection) -> None:
        chain = await _chain(conn, project)
        prev = str(chain[0].hash)
        for event in chain[1:]:
            digest = str(OTHER.mac(OTHER.current_id, prev.encode() + canonical_json(event)))
            await conn.execute(
                "UPDATE audit_chain SET prev_hash = $2, hash = $3, key_id = $4 WHERE event_id = $1",
                event.id,
                prev,
                digest,
                KEYS.current_id,
            )
            prev = digest

    await _as_superuser(database_url, relink)
    found = await verify_project(db, project, KEYS)
    assert found.first_broken is not None
    assert found.first_broken.seq == 2


@pytest.fixture
async def own_db(empty_database: str) -> AsyncIterator[asyncpg.Pool]:
    """A database of the test's own: linking with a rotated key links every project's
    pending events, which in the shared database would leave other tests' chains keyed
    by a key their gateways do not hold."""
    conn = await connect(empty_database, seal=SEAL)
    try:
        await migrate(conn)
    finally:
        await conn.close()
    pool = await create_pool(empty_database, seal=SEAL)
    yield pool
    await pool.close()


async def test_after_a_rotation_old_links_verify_under_the_old_key_kept_behind_the_new(
    own_db: asyncpg.Pool,
) -> None:
    db = own_db
    project = await _project(db, 3, keys=KEYS)
    rotated = AuditKeys.of(["a-new-audit-key-" + "n" * 32, "test-audit-key-" + "k" * 32])
    assert rotated.current_id != KEYS.current_id
    async with db.acquire() as conn:
        for n in range(2):
            await record(conn, project, Actor.system("tests"), "agent.created", f"agent:b{n}@1")
    await link_pending(db, rotated)
    async with db.acquire() as conn:
        key_ids = [event.key_id for event in await _chain(conn, project)]
    assert key_ids == [KEYS.current_id] * 3 + [rotated.current_id] * 2

    assert (await verify_project(db, project, rotated)).intact is True
    new_key_only = await verify_project(db, project, AuditKeys.of(["a-new-audit-key-" + "n" * 32]))
    assert new_key_only.first_broken is not None
    assert new_key_only.first_broken.seq == 1
    assert "not among those given" in new_key_only.first_broken.reason


async def test_a_chain_begun_unkeyed_goes_on_keyed_and_its_old_part_stays_checked(
    own_db: asyncpg.Pool, empty_database: str
) -> None:
    """The chain as migration 0017 finds it: plain SHA-256 links, of events from before
    they carried MACs (0018). The first keyed link chains from the last of them, so
    rewriting the unkeyed part, even consistently, breaks the chain at the switch."""
    db, database_url = own_db, empty_database
    project = await _project(db, 3)

    async def as_before_0017(conn: asyncpg.Connection) -> None:
        await _relink_unkeyed(conn, project, 1, keep_key_id=False)
        await conn.execute(
            "UPDATE audit_events SET mac = NULL, mac_key_id = NULL WHERE project = $1", project
        )
        await conn.execute("UPDATE audit_mac_switch SET from_id = from_id + 1000000")

    await _as_superuser(database_url, as_before_0017)
    async with db.acquire() as conn:
        for n in range(2):
            await record(conn, project, Actor.system("tests"), "agent.created", f"agent:c{n}@1")
    await link_pending(db, KEYS)
    before = await verify_project(db, project, KEYS)
    assert (before.intact, before.events, before.unkeyed, before.without_mac) == (True, 5, 3, 3)

    async def rewrite_old_part(conn: asyncpg.Connection) -> None:
        first = await conn.fetchval(
            "SELECT event_id FROM audit_chain WHERE project = $1 AND seq = 1", project
        )
        await conn.execute("UPDATE audit_events SET actor = 'nobody' WHERE id = $1", first)
        await _relink_unkeyed(conn, project, 1, keep_key_id=False, until_seq=3)
        chain = await _chain(conn, project)
        await conn.execute(
            "UPDATE audit_chain SET prev_hash = $2 WHERE event_id = $1",
            chain[3].id,
            chain[2].hash,
        )

    await _as_superuser(database_url, rewrite_old_part)
    after = await verify_project(db, project, KEYS)
    assert after.first_broken is not None
    assert after.first_broken.seq == 4


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "services.cli.main", "audit", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def test_cli_verify_takes_the_keys_from_a_file_and_says_in_a_line_when_it_has_none(
    db: asyncpg.Pool, database_url: str, tmp_path: Path
) -> None:
    project = await _project(db, 2)
    keyless = {k: v for k, v in os.environ.items() if not k.startswith("FERRUMDECK_AUDIT_KEY")} | {
        "FERRUMDECK_DATABASE_URL": database_url
    }
    refused = await asyncio.to_thread(_cli, "verify", "--project", project, env=keyless)
    assert refused.returncode == 2
    assert refused.stderr.count("\n") == 1
    assert "FERRUMDECK_AUDIT_KEY" in refused.stderr

    key_file = tmp_path / "audit.key"
    key_file.write_text("test-audit-key-" + "k" * 32 + "\n")
    verified = await asyncio.to_thread(
        _cli, "verify", "--project", project, "--key-file", str(key_file), env=keyless
    )
    assert verified.returncode == 0, verified.stderr
    assert json.loads(verified.stdout)["intact"] is True
    wrong_file = tmp_path / "wrong.key"
    wrong_file.write_text("another-audit-key-" + "o" * 32 + "\n")
    wrong = await asyncio.to_thread(
        _cli, "verify", "--project", project, "--key-file", str(wrong_file), env=keyless
    )
    assert wrong.returncode == 1
    assert json.loads(wrong.stdout)["first_broken"]["seq"] == 1


def test_a_gateway_without_an_audit_key_does_not_start(database_url: str) -> None:
    """Fail closed: one linking under a key that dies with it left every later verify of
    a shared database's chains failing, as if they had been tampered with."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FERRUMDECK_AUDIT_KEY")}
    env |= {
        "FERRUMDECK_DATABASE_URL": database_url,
        "FERRUMDECK_ENV_FILE": "",
        "FERRUMDECK_PORT": "0",
    }
    started = subprocess.run(
        [sys.executable, "-m", "services.cli.main", "gateway"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert started.returncode == 2
    assert started.stderr.strip().splitlines() == [
        "ferrumdeck gateway: set FERRUMDECK_AUDIT_KEY or FERRUMDECK_AUDIT_KEY_FILE"
    ]
