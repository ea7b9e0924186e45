"""The chainer looks for unlinked events from a low-water mark, not over the whole trail
each poll, and still links an event that commits long after events with later ids."""

from __future__ import annotations

import uuid

import asyncpg

from services.gateway.audit import Actor, AuditChainer, record
from services.gateway.settings import GatewaySettings

KEYS = GatewaySettings().audit_keys()


async def _linked(db: asyncpg.Pool, event_id: int) -> bool:
    return bool(await db.fetchval("SELECT 1 FROM audit_chain WHERE event_id = $1", event_id))


async def _event_id(conn: asyncpg.Connection, project: str, target: str) -> int:
    await record(conn, project, Actor.system("tests"), "agent.created", target)
    found: int = await conn.fetchval(
        "SELECT id FROM audit_events WHERE project = $1 AND target = $2", project, target
    )
    return found


async def test_an_event_committed_after_the_window_passed_it_is_linked_by_the_sweep(
    db: asyncpg.Pool,
) -> None:
    project = f"window-{uuid.uuid4().hex[:8]}"
    chainer = AuditChainer(db, KEYS, poll_seconds=1, hold_seconds=0, sweep_every=3)
    async with db.acquire() as late:
        transaction = late.transaction()
        await transaction.start()
        slow = await _event_id(late, project, "agent:slow@1")  # its id taken, not committed
        async with db.acquire() as conn:
            quick = await _event_id(conn, project, "agent:quick@1")
        assert quick > slow
        await chainer.step()  # the first poll looks at everything
        assert await _linked(db, quick)
        await transaction.commit()

    await chainer.step()  # the window starts past `slow`: no full scan
    await chainer.step()
    assert not await _linked(db, slow)
    await chainer.step()  # every third poll sweeps the whole trail
    assert await _linked(db, slow)
    seqs = await db.fetch(
        "SELECT event_id FROM audit_chain WHERE project = $1 ORDER BY seq", project
    )
    assert [r["event_id"] for r in seqs] == [quick, slow]  # the chain order is link order


async def test_out_of_order_commits_within_the_hold_are_linked_at_the_next_poll(
    db: asyncpg.Pool,
) -> None:
    project = f"window-{uuid.uuid4().hex[:8]}"
    chainer = AuditChainer(db, KEYS, poll_seconds=1, hold_seconds=3600, sweep_every=1000)
    async with db.acquire() as late:
        transaction = late.transaction()
        await transaction.start()
        slow = await _event_id(late, project, "agent:slow@1")
        async with db.acquire() as conn:
            quick = await _event_id(conn, project, "agent:quick@1")
        await chainer.step()
        await chainer.step()
        await transaction.commit()
    await chainer.step()  # not a sweep: the window has not passed what it cannot see yet
    assert await _linked(db, quick)
    assert await _linked(db, slow)
