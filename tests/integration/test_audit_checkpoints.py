"""Signed checkpoints of a chain's head, kept outside the database: what keyed links
cannot catch (cutting the newest events off, rewriting a whole chain as unkeyed links)
a checkpoint does, in the CLI, over the API and offline over an export."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from quart.typing import TestClientProtocol as Client

from services.contract.api import Role
from services.contract.audit import canonical_json
from services.contract.audit_checkpoint import Checkpoint
from services.gateway.audit import Actor, link_pending, record
from services.gateway.db.connections import connect
from services.gateway.settings import GatewaySettings
from services.gateway.store.audit_trail import EVENT_COLUMNS, to_event
from services.gateway.store.keys import create_key
from tests.support.sealing import SEAL

KEYS = GatewaySettings().audit_keys()


@pytest.fixture
async def project(db: asyncpg.Pool) -> tuple[str, dict[str, str]]:
    """A project of its own with 8 linked events (its creation, its key and six more)."""
    name = f"cp-{uuid.uuid4().hex[:8]}"
    async with db.acquire() as conn:
        _, secret = await create_key(conn, "cp-admin", Role.ADMIN, name, Actor.system("tests"))
        for n in range(6):
            await record(conn, name, Actor.system("tests"), "agent.created", f"agent:a{n}@1")
    await link_pending(db, KEYS)
    return name, {"Authorization": f"Bearer {secret}"}


def _cli(database_url: str, signing_key: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "services.cli.main", "audit", *args],
        env={
            **os.environ,
            "FERRUMDECK_DATABASE_URL": database_url,
            "FERRUMDECK_AUDIT_SIGNING_KEY_FILE": str(signing_key),
        },
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def _checkpoint(database_url: str, signing_key: Path, project: str, out: Path) -> Checkpoint:
    made = await asyncio.to_thread(
        _cli, database_url, signing_key, "checkpoint", "--project", project, "-o", str(out)
    )
    assert made.returncode == 0, made.stderr
    return Checkpoint.from_file(out)


async def _as_superuser(database_url: str, statements: list[tuple[str, Any]]) -> None:
    conn = await connect(database_url, seal=SEAL)
    try:
        async with conn.transaction():
            await conn.execute("SET LOCAL session_replication_role = replica")
            for sql, arg in statements:
                await conn.execute(sql, arg)
    finally:
        await conn.close()


async def _cut_newest(database_url: str, project: str, n: int) -> None:
    """Truncation: the newest `n` events and their links gone, the chain still whole."""
    conn = await connect(database_url, seal=SEAL)
    try:
        ids = await conn.fetch(
            "SELECT event_id FROM audit_chain WHERE project = $1 ORDER BY seq DESC LIMIT $2",
            project,
            n,
        )
    finally:
        await conn.close()
    cut = [r["event_id"] for r in ids]
    await _as_superuser(
        database_url,
        [
            ("DELETE FROM audit_chain WHERE event_id = ANY($1)", cut),
            ("DELETE FROM audit_events WHERE id = ANY($1)", cut),
        ],
    )


async def test_cutting_the_newest_events_off_is_caught_by_a_checkpoint_of_the_head(
    client: Client,
    database_url: str,
    audit_signing_key: Path,
    project: tuple[str, dict[str, str]],
    tmp_path: Path,
) -> None:
    name, headers = project
    checkpoint = await _checkpoint(database_url, audit_signing_key, name, tmp_path / "cp.json")
    assert checkpoint.seq == 8
    await _cut_newest(database_url, name, 3)

    unaided = await asyncio.to_thread(
        _cli, database_url, audit_signing_key, "verify", "--project", name
    )
    assert unaided.returncode == 0  # what nothing outside the database can catch
    held = await asyncio.to_thread(
        _cli,
        database_url,
        audit_signing_key,
        "verify",
        "--project",
        name,
        "--checkpoint",
        str(tmp_path / "cp.json"),
    )
    assert held.returncode == 1, held.stderr
    verdict = json.loads(held.stdout)
    assert verdict["intact"] is False
    assert verdict["events"] == 5
    assert verdict["checkpoint_failure"]["seq"] == 8
    assert "cut off" in verdict["checkpoint_failure"]["reason"]

    response = await client.get(
        f"/v1/audit/verify?since_checkpoint={checkpoint.token()}", headers=headers
    )
    assert response.status_code == 200
    over_api = await response.get_json()
    assert over_api["intact"] is False
    assert over_api["checkpoint_failure"]["seq"] == 8


async def test_a_whole_chain_rewritten_as_unkeyed_links_is_caught_at_the_edit(
    database_url: str,
    audit_signing_key: Path,
    project: tuple[str, dict[str, str]],
    tmp_path: Path,
) -> None:
    """The one rewrite keyed links let through (they accept an unkeyed prefix, as chains
    begun before keys have). Of events from before MACs only a checkpoint catches it;
    of sealed events, the edited event's MAC does, checkpoint or not."""
    name, _ = project
    await _checkpoint(database_url, audit_signing_key, name, tmp_path / "cp.json")
    conn = await connect(database_url, seal=SEAL)
    try:
        rows = await conn.fetch(
            f"""SELECT {EVENT_COLUMNS} FROM audit_chain c
                  JOIN audit_events e ON e.id = c.event_id
                 WHERE c.project = $1 ORDER BY c.seq""",
            name,
        )
        async with conn.transaction():
            await conn.execute("SET LOCAL session_replication_role = replica")
            prev = "0" * 64
            for event in map(to_event, rows):
                if event.seq == 2:
                    await conn.execute(
                        "UPDATE audit_events SET actor = 'nobody' WHERE id = $1", event.id
                    )
                    event = event.model_copy(update={"actor": "nobody"})
                digest = hashlib.sha256(prev.encode() + canonical_json(event)).hexdigest()
                await conn.execute(
                    """UPDATE audit_chain SET prev_hash = $2, hash = $3, key_id = NULL
                        WHERE event_id = $1""",
                    event.id,
                    prev,
                    digest,
                )
                prev = digest
    finally:
        await conn.close()
    held = await asyncio.to_thread(
        _cli,
        database_url,
        audit_signing_key,
        "verify",
        "--project",
        name,
        "--checkpoint",
        str(tmp_path / "cp.json"),
    )
    assert held.returncode == 1
    broken = json.loads(held.stdout)["first_broken"]
    assert broken["seq"] == 2
    assert "MAC does not verify" in broken["reason"]


async def test_an_export_cut_short_fails_offline_against_the_checkpoint(
    database_url: str,
    audit_signing_key: Path,
    project: tuple[str, dict[str, str]],
    tmp_path: Path,
) -> None:
    name, _ = project
    await _checkpoint(database_url, audit_signing_key, name, tmp_path / "cp.json")
    export = tmp_path / "audit.jsonl"
    exported = await asyncio.to_thread(
        _cli, database_url, audit_signing_key, "export", "--project", name, "-o", str(export)
    )
    assert exported.returncode == 0, exported.stderr
    offline = ["verify", "--file", str(export), "--checkpoint", str(tmp_path / "cp.json")]
    whole = await asyncio.to_thread(_cli, database_url, audit_signing_key, *offline)
    assert whole.returncode == 0, whole.stdout + whole.stderr
    export.write_text("".join(export.read_text().splitlines(keepends=True)[:5]))
    short = await asyncio.to_thread(_cli, database_url, audit_signing_key, *offline)
    assert short.returncode == 1
    verdict = json.loads(short.stdout.split(":", 1)[1])
    assert verdict["checkpoint_failure"]["seq"] == 8


async def test_an_altered_checkpoint_is_refused_and_a_broken_chain_gets_none(
    db: asyncpg.Pool,
    database_url: str,
    audit_signing_key: Path,
    project: tuple[str, dict[str, str]],
    tmp_path: Path,
) -> None:
    name, _ = project
    path = tmp_path / "cp.json"
    checkpoint = await _checkpoint(database_url, audit_signing_key, name, path)
    path.write_text(checkpoint.model_copy(update={"seq": 3}).model_dump_json())
    altered = await asyncio.to_thread(
        _cli,
        database_url,
        audit_signing_key,
        "verify",
        "--project",
        name,
        "--checkpoint",
        str(path),
    )
    assert altered.returncode == 2
    assert "does not verify" in altered.stderr
    assert altered.stderr.count("\n") == 1

    third = await db.fetchval(
        "SELECT event_id FROM audit_chain WHERE project = $1 AND seq = 3", name
    )
    await _as_superuser(
        database_url, [("UPDATE audit_events SET actor = 'x' WHERE id = $1", third)]
    )
    refused = await asyncio.to_thread(
        _cli, database_url, audit_signing_key, "checkpoint", "--project", name, "-o", str(path)
    )
    assert refused.returncode == 1
    assert json.loads(refused.stdout)["first_broken"]["seq"] == 3
    assert Checkpoint.from_file(path).seq == 3  # the altered file, not overwritten


async def test_verify_since_a_checkpoint_goes_on_from_its_head_and_refuses_a_bad_one(
    client: Client,
    db: asyncpg.Pool,
    database_url: str,
    audit_signing_key: Path,
    project: tuple[str, dict[str, str]],
    tmp_path: Path,
) -> None:
    name, headers = project
    checkpoint = await _checkpoint(database_url, audit_signing_key, name, tmp_path / "cp.json")
    async with db.acquire() as conn:
        await record(conn, name, Actor.system("tests"), "agent.created", "agent:later@1")
    await link_pending(db, KEYS)
    since = await client.get(
        f"/v1/audit/verify?since_checkpoint={checkpoint.token()}", headers=headers
    )
    body = await since.get_json()
    assert (body["intact"], body["events"], body["checkpoints"]) == (True, 9, 1)

    forged = checkpoint.model_copy(update={"hash": "f" * 64}).token()
    for token, says in [
        ("garbage", "not a checkpoint"),
        (forged, "does not verify"),
    ]:
        refused = await client.get(f"/v1/audit/verify?since_checkpoint={token}", headers=headers)
        assert refused.status_code == 422
        assert says in (await refused.get_json())["error"]["message"]

    async with db.acquire() as conn:
        _, other = await create_key(
            conn, "cp-other", Role.ADMIN, f"cp-{uuid.uuid4().hex[:8]}", Actor.system("tests")
        )
    elsewhere = await client.get(
        f"/v1/audit/verify?since_checkpoint={checkpoint.token()}",
        headers={"Authorization": f"Bearer {other}"},
    )
    assert elsewhere.status_code == 422
