"""Events the application did not write: every event carries the gateway's MAC, so a row
inserted by hand — by the gateway's own database role or by the superuser — is reported
by verify even once the chainer has linked it, and the chainer says so as it links it."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from services.contract.audit import AuditEvent, verify
from services.gateway import metrics
from services.gateway.audit import Actor, link_pending, record, verify_project
from services.gateway.db.connections import connect, create_pool
from services.gateway.db.migrations import migrate
from services.gateway.settings import GatewaySettings
from services.gateway.store.audit_trail import chained_events
from tests.support.sealing import SEAL

KEYS = GatewaySettings().audit_keys()


@pytest.fixture
async def as_gateway(app_database_url: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await connect(app_database_url, seal=SEAL)
    yield conn
    await conn.close()


async def _linked(db: asyncpg.Pool, project: str) -> None:
    """Every event of `project` linked, by us or by a test gateway's chainer (which holds
    the chain's lock while it links, when it runs at the same time)."""
    for _ in range(100):
        await link_pending(db, KEYS)
        if not await db.fetchval(
            """SELECT count(*) FROM audit_events e LEFT JOIN audit_chain c
                   ON c.event_id = e.id WHERE e.project = $1 AND c.event_id IS NULL""",
            project,
        ):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"the events of {project} were not linked")


async def _project(db: asyncpg.Pool, events: int = 3) -> str:
    name = f"sealed-{uuid.uuid4().hex[:8]}"
    async with db.acquire() as conn:
        for n in range(events):
            await record(conn, name, Actor.system("tests"), "agent.created", f"agent:a{n}@1")
    await _linked(db, name)
    return name


@pytest.fixture
async def own_db(empty_database: str) -> AsyncIterator[asyncpg.Pool]:
    """No chainer but the test's: what it counts, it linked."""
    conn = await connect(empty_database, seal=SEAL)
    try:
        await migrate(conn)
    finally:
        await conn.close()
    pool = await create_pool(empty_database, seal=SEAL)
    yield pool
    await pool.close()


async def test_the_chainer_counts_each_forged_event_it_links_once(own_db: asyncpg.Pool) -> None:
    """By the superuser this time: the metric an operator alerts on."""
    project = await _project(own_db, 1)
    before = metrics.AUDIT_FORGED_EVENTS._value.get()
    await own_db.execute(
        """INSERT INTO audit_events (project, actor, actor_kind, action, target)
           VALUES ($1, 'root', 'system', 'key.revoked', 'key:k')""",
        project,
    )
    await link_pending(own_db, KEYS)
    await link_pending(own_db, KEYS)
    assert metrics.AUDIT_FORGED_EVENTS._value.get() == before + 1
    found = await verify_project(own_db, project, KEYS)
    assert found.first_broken is not None
    assert found.first_broken.seq == 2
    linked = await own_db.fetchval("SELECT count(*) FROM audit_chain WHERE project = $1", project)
    assert linked == 3, "the forged event and the chainer's alert about it are both linked"


async def test_a_backdated_approval_inserted_by_hand_is_reported_once_linked(
    db: asyncpg.Pool, as_gateway: asyncpg.Connection
) -> None:
    """The issue's third row: a plain INSERT, no trigger bypass, by the gateway's role."""
    project = await _project(db)
    forged_id = await as_gateway.fetchval(
        """INSERT INTO audit_events (project, actor, actor_kind, action, target, created_at)
           VALUES ($1, 'alice (key)', 'key', 'approval.approved', 'approval:x', $2)
           RETURNING id""",
        project,
        datetime.now(UTC) - timedelta(days=30),
    )
    await _linked(db, project)

    found = await verify_project(db, project, KEYS)
    assert found.intact is False
    assert found.first_broken is not None
    assert (found.first_broken.id, found.first_broken.seq) == (forged_id, 4)
    assert "no MAC" in found.first_broken.reason
    alert = await db.fetchrow(
        "SELECT actor, details FROM audit_events WHERE project = $1 AND action = $2",
        project,
        "audit.forged_event",
    )
    assert alert is not None
    assert alert["actor"] == "audit-chainer"
    assert (alert["details"]["event_id"], alert["details"]["seq"]) == (forged_id, 4)


async def test_a_made_up_mac_does_not_pass(
    db: asyncpg.Pool, as_gateway: asyncpg.Connection
) -> None:
    project = await _project(db, 1)
    await as_gateway.execute(
        """INSERT INTO audit_events (project, actor, actor_kind, action, target, mac_key_id,
                                     mac)
           VALUES ($1, 'x', 'system', 'run.completed', 'run:y', $2, $3)""",
        project,
        KEYS.current_id,
        "ab" * 32,
    )
    await _linked(db, project)
    found = await verify_project(db, project, KEYS)
    assert found.first_broken is not None
    assert found.first_broken.seq == 2
    assert "MAC does not verify" in found.first_broken.reason


async def test_a_copy_of_a_real_event_is_refused(
    db: asyncpg.Pool, as_gateway: asyncpg.Connection
) -> None:
    """The MAC leaves out the id, so a copy would verify: the database refuses it."""
    project = await _project(db, 1)
    with pytest.raises(asyncpg.UniqueViolationError):
        await as_gateway.execute(
            """INSERT INTO audit_events (project, actor, actor_kind, action, target, details,
                                         request_id, created_at, mac_key_id, mac)
               SELECT project, actor, actor_kind, action, target, details, request_id,
                      created_at, mac_key_id, mac
                 FROM audit_events WHERE project = $1""",
            project,
        )


async def test_the_gateways_role_cannot_choose_an_event_id_or_move_where_macs_begin(
    as_gateway: asyncpg.Connection,
) -> None:
    """An id below the switch would pass a forged event off as one from before MACs."""
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await as_gateway.execute(
            """INSERT INTO audit_events (id, project, actor, actor_kind, action, target)
               VALUES (1000000000, 'p', 'x', 'system', 'run.created', 'run:z')"""
        )
    for statement in (
        "UPDATE audit_mac_switch SET from_id = from_id + 1000",
        "DELETE FROM audit_mac_switch",
        "INSERT INTO audit_mac_switch VALUES (1)",
    ):
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await as_gateway.execute(statement)


async def test_every_path_that_appends_seals_what_it_writes(db: asyncpg.Pool) -> None:
    """Numbers jsonb spells differently from Python (1e+16 comes back as digits) still
    verify: what a caller puts in details must never read as forged."""
    project = f"sealed-{uuid.uuid4().hex[:8]}"
    async with db.acquire() as conn:
        await record(
            conn,
            project,
            Actor.system("tests"),
            "policy.updated",
            "policy:p",
            {"big": 1e16, "tiny": 1.5e-10, "huge": 1e300, "exact": 2**60, "text": "é\u2028"},
        )
    await _linked(db, project)
    found = await verify_project(db, project, KEYS)
    assert (found.intact, found.events, found.without_mac) == (True, 1, 0)


async def test_an_export_checked_offline_finds_an_event_without_a_mac_after_sealed_ones(
    db: asyncpg.Pool, database_url: str
) -> None:
    """Offline there is no switch to read: no event may lack a MAC once one with a lower
    id had one. The superuser strips the MAC of the newest event and relinks nothing:
    the link still verifies, the missing MAC does not."""
    project = await _project(db, 3)
    conn = await connect(database_url, seal=SEAL)
    try:
        async with conn.transaction():
            await conn.execute("SET LOCAL session_replication_role = replica")
            await conn.execute(
                """UPDATE audit_events SET mac = NULL, mac_key_id = NULL
                    WHERE id = (SELECT max(id) FROM audit_events WHERE project = $1)""",
                project,
            )
        async with conn.transaction(isolation="repeatable_read"):
            events: list[AuditEvent] = [e async for e in chained_events(conn, project)]
    finally:
        await conn.close()
    offline = verify(events, KEYS)
    assert offline.first_broken is not None
    assert offline.first_broken.seq == 3
    assert "no MAC" in offline.first_broken.reason
