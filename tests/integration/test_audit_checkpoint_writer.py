"""Scheduled checkpoints: the gateway writes every chain's head to a directory the
operator names, and stops vouching for a chain cut below its last checkpoint."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import asyncpg
import pytest
from quart.typing import TestAppProtocol as App

from services.contract.audit_checkpoint import Checkpoint, CheckpointSigner, check_signature
from services.gateway.audit import Actor, record
from services.gateway.db.connections import connect
from services.gateway.settings import GatewaySettings
from testbed.waiting import eventually
from tests.support.sealing import SEAL


@pytest.fixture
def checkpoint_dir(tmp_path: Path) -> Path:
    return tmp_path / "checkpoints"


@pytest.fixture
def settings(settings: GatewaySettings, checkpoint_dir: Path) -> GatewaySettings:
    return settings.model_copy(
        update={
            "audit_checkpoint_dir": checkpoint_dir,
            "audit_checkpoint_seconds": 0.2,
            "audit_chain_seconds": 0.1,
        }
    )


async def _append(db: asyncpg.Pool, project: str, n: int) -> None:
    async with db.acquire() as conn:
        for i in range(n):
            await record(conn, project, Actor.system("tests"), "agent.created", f"agent:{i}@1")


def _written(folder: Path) -> list[Checkpoint]:
    return [Checkpoint.from_file(p) for p in sorted(folder.glob("*.json"))]


def _probe_of(folder: Path) -> Callable[[], Awaitable[list[Checkpoint]]]:
    async def written() -> list[Checkpoint]:
        return _written(folder)

    return written


async def test_the_gateway_checkpoints_each_new_head_and_none_of_a_tampered_chain(
    app: App,
    db: asyncpg.Pool,
    database_url: str,
    checkpoint_dir: Path,
    audit_signing_key: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    project = f"sched-{uuid.uuid4().hex[:8]}"
    await db.execute("INSERT INTO projects (name) VALUES ($1)", project)
    folder = checkpoint_dir / project
    public = CheckpointSigner.from_file(audit_signing_key).public
    await _append(db, project, 3)
    first = await eventually(_probe_of(folder), lambda found: len(found) >= 1)
    assert first[-1].seq == 3
    check_signature(first[-1], public)

    await _append(db, project, 2)
    later = await eventually(_probe_of(folder), lambda found: found[-1].seq == 5)
    assert [c.seq for c in later] == [3, 5]

    conn = await connect(database_url, seal=SEAL)
    try:
        async with conn.transaction():
            await conn.execute("SET LOCAL session_replication_role = replica")
            head = await conn.fetchval(
                "SELECT event_id FROM audit_chain WHERE project = $1 AND seq = 5", project
            )
            await conn.execute("DELETE FROM audit_chain WHERE event_id = $1", head)
            await conn.execute("DELETE FROM audit_events WHERE id = $1", head)
    finally:
        await conn.close()
    caplog.set_level(logging.ERROR, logger="services.gateway.checkpoint_writer")

    async def logged() -> str:
        return caplog.text

    await eventually(logged, lambda text: f"audit chain of {project} does not" in text)
    assert [c.seq for c in _written(folder)] == [3, 5]
