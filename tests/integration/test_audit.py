"""The audit trail: every change leaves an event, chained, append-only, tamper-evident."""

from __future__ import annotations

import asyncio
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
from services.gateway.audit import Actor, link_pending
from services.gateway.settings import GatewaySettings
from services.gateway.store.keys import create_key
from testbed.waiting import eventually
from tests.support.harness import ToolHarness

# The key the test gateways link under (tests/conftest.py sets it for all of them).
KEYS = GatewaySettings().audit_keys()


async def _events(client: Client, admin: dict[str, str], **filters: str) -> list[dict[str, Any]]:
    query = "&".join(f"{k}={v}" for k, v in filters.items())
    body = await (await client.get(f"/v1/audit?limit=500&{query}", headers=admin)).get_json()
    items: list[dict[str, Any]] = body["items"]
    return items


async def _verified(client: Client, admin: dict[str, str]) -> dict[str, Any]:
    async def check() -> dict[str, Any]:
        body: dict[str, Any] = await (
            await client.get("/v1/audit/verify", headers=admin)
        ).get_json()
        return body

    return await eventually(check, lambda v: v["unchained"] == 0 or not v["intact"])


async def test_a_runs_life_is_in_the_trail_with_actors_and_request_ids(
    harness: ToolHarness,
) -> None:
    await harness.policy({"id": "ask", "tool": "notes.*", "effect": "require_approval"})
    run_id = await harness.run(tools=["notes.*"])
    _, grant = await harness.claim(run_id, "audit-worker")
    _, verdict = await harness.authorize(
        run_id, grant["epoch"], 1, "notes.write_note", {"text": "x"}
    )
    await harness.decide(verdict["approval_id"], "reject", "no")
    response = await harness.client.post(
        f"/v1/runs/{run_id}/cancel", headers={**harness.admin, "X-Request-Id": "req-audit-1"}
    )
    assert response.status_code == 200
    events = await _events(harness.client, harness.admin, target=f"run:{run_id}")
    actions = [e["action"] for e in reversed(events)]
    assert actions[0] == "run.created"
    assert {"run.dispatched", "run.claimed"} <= set(actions)
    assert "tool.approval_requested" in actions
    assert actions.count("run.cancelled") == 1
    by_action = {e["action"]: e for e in events}
    # The worker's key, beside the name it gave itself: any holder of a key can give any name.
    assert by_action["run.claimed"]["actor"].startswith("audit-worker (")
    assert by_action["run.claimed"]["actor_kind"] == "worker"
    assert by_action["run.dispatched"]["actor_kind"] == "system"
    assert by_action["run.cancelled"]["actor"].startswith("test-admin (")
    assert by_action["run.cancelled"]["request_id"] == "req-audit-1"
    decided = await _events(harness.client, harness.admin, action="approval")
    assert decided[0]["action"] == "approval.rejected"
    assert decided[0]["details"]["reason"] == "no"
    policy = await _events(harness.client, harness.admin, action="policy.updated")
    assert policy[0]["actor_kind"] == "key"


async def test_the_chain_verifies_and_links_every_event(
    harness: ToolHarness, db: asyncpg.Pool
) -> None:
    await harness.run()
    await link_pending(db, KEYS)
    verification = await _verified(harness.client, harness.admin)
    assert verification["intact"] is True
    assert verification["first_broken"] is None
    chained = [e for e in await _events(harness.client, harness.admin) if e["seq"] is not None]
    assert chained
    assert all(len(e["hash"]) == len(e["prev_hash"]) == 64 for e in chained)


async def test_the_database_refuses_to_change_or_delete_events(db: asyncpg.Pool) -> None:
    await link_pending(db, KEYS)
    event_id = await db.fetchval("SELECT max(event_id) FROM audit_chain")
    for statement in (
        "UPDATE audit_events SET action = 'forged' WHERE id = $1",
        "DELETE FROM audit_events WHERE id = $1",
        "DELETE FROM audit_chain WHERE event_id = $1",
    ):
        with pytest.raises(asyncpg.RaiseError, match="append-only"):
            await db.execute(statement, event_id)
    with pytest.raises(asyncpg.RaiseError, match="append-only"):
        await db.execute("TRUNCATE audit_events CASCADE")


async def test_concurrent_writers_keep_one_intact_chain(
    harness: ToolHarness, db: asyncpg.Pool
) -> None:
    agent = await harness.agent()
    before = await db.fetchval("SELECT count(*) FROM audit_events WHERE project = 'default'")
    responses = await asyncio.gather(
        *(
            harness.client.post(
                "/v1/runs", json={"agent": agent, "input": f"n{i}"}, headers=harness.admin
            )
            for i in range(60)
        )
    )
    assert all(r.status_code == 202 for r in responses)
    await link_pending(db, KEYS)
    verification = await _verified(harness.client, harness.admin)
    assert verification["intact"] is True
    assert verification["events"] >= before + 60


@pytest.fixture
async def lone_project(db: asyncpg.Pool, client: Client) -> tuple[str, dict[str, str]]:
    """A project of its own, so tampering with its chain disturbs no other test."""
    name = f"tamper-{uuid.uuid4().hex[:6]}"
    async with db.acquire() as conn:
        _, secret = await create_key(conn, "tamper-admin", Role.ADMIN, name, Actor.system("tests"))
    headers = {"Authorization": f"Bearer {secret}"}
    for n in range(5):
        created = await client.post(
            "/v1/agents", json={"name": f"a{n}", "model": "scripted"}, headers=headers
        )
        assert created.status_code == 201
    await link_pending(db, KEYS)
    return name, headers


async def _forge(database_url: str, event_id: int) -> None:
    """What a superuser can do behind the database's back: bypass the triggers."""
    conn = await asyncpg.connect(database_url)
    try:
        async with conn.transaction():
            await conn.execute("SET LOCAL session_replication_role = replica")
            await conn.execute(
                """UPDATE audit_events SET details = '{"forged": true}' WHERE id = $1""", event_id
            )
    finally:
        await conn.close()


async def test_tampering_is_found_at_the_altered_link(
    client: Client, db: asyncpg.Pool, database_url: str, lone_project: tuple[str, dict[str, str]]
) -> None:
    project, headers = lone_project
    assert (await _verified(client, headers))["intact"] is True
    third = await db.fetchval(
        "SELECT event_id FROM audit_chain WHERE project = $1 AND seq = 3", project
    )
    await _forge(database_url, third)
    broken = await (await client.get("/v1/audit/verify", headers=headers)).get_json()
    assert broken["intact"] is False
    assert broken["first_broken"]["id"] == third
    assert broken["first_broken"]["seq"] == 3
    assert "altered" in broken["first_broken"]["reason"]


def _cli(
    database_url: str, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "services.cli.main", "audit", *args],
        env={**os.environ, "FERRUMDECK_DATABASE_URL": database_url, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def test_cli_verifies_and_exports_a_chain_that_verifies_offline(
    database_url: str, db: asyncpg.Pool, lone_project: tuple[str, dict[str, str]], tmp_path: Path
) -> None:
    project, _ = lone_project
    verified = await asyncio.to_thread(_cli, database_url, "verify", "--project", project)
    assert verified.returncode == 0, verified.stderr
    assert json.loads(verified.stdout)["intact"] is True
    export = tmp_path / "audit.jsonl"
    exported = await asyncio.to_thread(
        _cli, database_url, "export", "--project", project, "-o", str(export)
    )
    assert exported.returncode == 0, exported.stderr
    lines = export.read_text().splitlines()
    assert len(lines) >= 6
    offline = await asyncio.to_thread(_cli, database_url, "verify", "--file", str(export))
    assert offline.returncode == 0
    assert '"intact": true' in offline.stdout

    edited = [json.loads(line) for line in lines]
    edited[1]["target"] = "agent:someone-else@1"
    export.write_text("".join(json.dumps(e) + "\n" for e in edited))
    caught = await asyncio.to_thread(_cli, database_url, "verify", "--file", str(export))
    assert caught.returncode == 1
    assert json.loads(caught.stdout.split(":", 1)[1])["first_broken"]["seq"] == 2
