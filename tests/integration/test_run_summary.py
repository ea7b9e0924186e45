"""`GET /v1/runs/summary`: the dashboard's figures counted by the database. The deck used
to page through the newest 2,000 runs and count them itself, so a busier quarter hour
was shown as if those were all."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
from quart.typing import TestClientProtocol as Client

from services.contract.api import Role
from services.contract.ids import first_uuid7_at, uuid7
from services.gateway.audit import Actor
from services.gateway.store.keys import create_key


async def _project(db: asyncpg.Pool) -> tuple[str, dict[str, str]]:
    name = f"summary-{uuid.uuid4().hex[:6]}"
    async with db.acquire() as conn:
        _, secret = await create_key(conn, "summary", Role.ADMIN, name, Actor.system("t"))
    return name, {"Authorization": f"Bearer {secret}"}


async def test_every_run_of_the_window_is_counted_not_a_page_of_them(
    client: Client, db: asyncpg.Pool
) -> None:
    project, admin = await _project(db)
    for name in ("alpha", "beta"):
        created = await client.post(
            "/v1/agents", json={"name": name, "model": "scripted"}, headers=admin
        )
        assert created.status_code == 201
    # More than the deck's old 2,000-run scan, in the window, and some from before it.
    recent = [uuid7() for _ in range(2500)]
    hour_ago = datetime.now(UTC) - timedelta(hours=1)
    old = [uuid.UUID(int=first_uuid7_at(hour_ago).int + n) for n in range(1, 41)]
    await db.execute(
        """INSERT INTO runs (id, project, agent_name, agent_version, status, input,
                             prompt_tokens, completion_tokens, cost_usd)
           SELECT id, $1, CASE WHEN n % 4 = 0 THEN 'beta' ELSE 'alpha' END, 1,
                  CASE WHEN n % 2 = 0 THEN 'completed' ELSE 'queued' END, 'x', 10, 5, 0.001
             FROM unnest($2::uuid[]) WITH ORDINALITY AS t (id, n)""",
        project,
        recent,
    )
    await db.execute(
        """INSERT INTO runs (id, project, agent_name, agent_version, status, input)
           SELECT id, $1, 'alpha', 1, 'waiting_approval', 'old' FROM unnest($2::uuid[]) id""",
        project,
        old,
    )
    summary = await (await client.get("/v1/runs/summary?minutes=15", headers=admin)).get_json()
    assert summary["started"] == 2500, summary
    assert summary["by_status"] == {"completed": 1250, "queued": 1250}
    assert summary["open"] == {
        "queued": 1250,
        "running": 0,
        "waiting_approval": 40,
        "waiting_thread": 0,
    }
    assert summary["total_tokens"] == 2500 * 15
    assert abs(summary["cost_usd"] - 2.5) < 1e-6
    agents = {a["agent"]: (a["started"], a["completed"]) for a in summary["agents"]}
    assert agents == {"alpha": (1875, 625), "beta": (625, 625)}

    _, other = await _project(db)
    theirs = await (await client.get("/v1/runs/summary", headers=other)).get_json()
    assert (theirs["started"], theirs["open"]["queued"], theirs["agents"]) == (0, 0, [])


async def test_the_window_is_bounded(client: Client, admin: dict[str, str]) -> None:
    for minutes in (0, 1441, "x"):
        response = await client.get(f"/v1/runs/summary?minutes={minutes}", headers=admin)
        assert response.status_code == 400
    # Found by the fuzz run: a window reaching before year 1 was a 500.
    for until in ("0001-01-01T00:00:00Z", "1969-12-31T00:00:00Z"):
        response = await client.get(f"/v1/runs/summary?until={until}", headers=admin)
        assert response.status_code == 422, until
        assert "until must be between" in await response.get_data(as_text=True)
    response = await client.get("/v1/runs/summary?until=1970-01-02T00:00:00Z", headers=admin)
    assert response.status_code == 200


async def test_dead_letters_of_the_window_are_counted_in_the_project_only(
    client: Client, db: asyncpg.Pool
) -> None:
    project, admin = await _project(db)
    other, other_admin = await _project(db)
    for headers in (admin, other_admin):
        created = await client.post(
            "/v1/agents", json={"name": "alpha", "model": "scripted"}, headers=headers
        )
        assert created.status_code == 201
    hour_ago = first_uuid7_at(datetime.now(UTC) - timedelta(hours=1))
    rows = [
        (uuid7(), project, "failed", True),
        (uuid7(), project, "failed", True),
        (uuid7(), project, "failed", False),
        (uuid.UUID(int=hour_ago.int + 1), project, "failed", True),  # before the window
        (uuid7(), other, "failed", True),
    ]
    await db.execute(
        """INSERT INTO runs (id, project, agent_name, agent_version, status, input,
                             dead_lettered_at)
           SELECT id, p, 'alpha', 1, s, 'x', CASE WHEN d THEN now() END
             FROM unnest($1::uuid[], $2::text[], $3::text[], $4::boolean[]) AS t (id, p, s, d)""",
        [r[0] for r in rows],
        [r[1] for r in rows],
        [r[2] for r in rows],
        [r[3] for r in rows],
    )
    summary = await (await client.get("/v1/runs/summary?minutes=15", headers=admin)).get_json()
    assert (summary["dead_lettered"], summary["by_status"]) == (2, {"failed": 3})
    theirs = await (await client.get("/v1/runs/summary", headers=other_admin)).get_json()
    assert theirs["dead_lettered"] == 1


async def test_a_run_waiting_for_its_thread_is_counted_open(
    client: Client, db: asyncpg.Pool
) -> None:
    _, admin = await _project(db)
    created = await client.post(
        "/v1/agents", json={"name": "chat", "model": "scripted"}, headers=admin
    )
    assert created.status_code == 201
    thread = await (await client.post("/v1/threads", json={}, headers=admin)).get_json()
    for turn in ("first", "second"):
        body = {"agent": "chat", "input": turn, "thread_id": thread["id"], "if_busy": "enqueue"}
        assert (await client.post("/v1/runs", json=body, headers=admin)).status_code == 202
    summary = await (await client.get("/v1/runs/summary", headers=admin)).get_json()
    assert summary["open"] == {
        "queued": 1,
        "running": 0,
        "waiting_approval": 0,
        "waiting_thread": 1,
    }
