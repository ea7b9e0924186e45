"""Waiting for a run's answer: `Prefer: wait=N` on `POST /v1/runs`, `?wait=N` on a run.

The harness plays the worker over the worker API while a request waits, so each test
shows the wait ending on the change a user would be waiting for — the run finishing or
parking for an approval — or giving up with the run as it is.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import asyncpg
import pytest
from quart.typing import TestClientProtocol as Client

from services.contract.api import Role
from services.gateway.audit import Actor
from services.gateway.settings import GatewaySettings
from services.gateway.store.keys import create_key
from testbed.waiting import eventually
from tests.support.harness import ToolHarness

MAX_WAIT = 20
# Far below MAX_WAIT: a wait that ends by this bound ended on the change, not its timeout.
ENDED_ON_THE_CHANGE = 10


@pytest.fixture
def settings(settings: GatewaySettings) -> GatewaySettings:
    return settings.model_copy(update={"run_wait_max_seconds": MAX_WAIT})


async def _run_of(db: asyncpg.Pool, agent: str) -> str:
    async def ids() -> list[str]:
        rows = await db.fetch("SELECT id FROM runs WHERE agent_name = $1", agent)
        return [str(row["id"]) for row in rows]

    (run_id,) = await eventually(ids, lambda found: len(found) == 1)
    return run_id


async def _create(harness: ToolHarness, agent: str, prefer: str | None) -> Any:
    headers = dict(harness.admin)
    if prefer is not None:
        headers["Prefer"] = prefer
    return await harness.client.post(
        "/v1/runs", json={"agent": agent, "input": "what time is it?"}, headers=headers
    )


async def test_prefer_wait_answers_200_with_the_finished_run(
    harness: ToolHarness, db: asyncpg.Pool
) -> None:
    agent = await harness.agent()
    creating = asyncio.create_task(_create(harness, agent, f"wait={MAX_WAIT}"))
    run_id = await _run_of(db, agent)
    assert not creating.done()
    status, grant = await harness.claim(run_id)
    assert status == 200
    await harness.step(run_id, grant["epoch"], 1, final_output="noon")
    response = await asyncio.wait_for(creating, ENDED_ON_THE_CHANGE)
    assert response.status_code == 200
    assert response.headers["Preference-Applied"] == f"wait={MAX_WAIT}"
    assert response.headers["Location"] == f"/v1/runs/{run_id}"
    run = await response.get_json()
    assert (run["id"], run["status"], run["output"]) == (run_id, "completed", "noon")


async def test_prefer_wait_gives_up_with_a_202_and_the_run_as_it_is(
    harness: ToolHarness,
) -> None:
    response = await _create(harness, await harness.agent(), "respond-async, wait=1")
    assert response.status_code == 202
    assert response.headers["Preference-Applied"] == "wait=1"
    assert (await response.get_json())["status"] == "queued"


async def test_a_wait_beyond_the_gateways_bound_is_cut_to_it(
    harness: ToolHarness, db: asyncpg.Pool
) -> None:
    agent = await harness.agent()
    creating = asyncio.create_task(_create(harness, agent, "wait=3600"))
    run_id = await _run_of(db, agent)
    _, grant = await harness.claim(run_id)
    await harness.step(run_id, grant["epoch"], 1, final_output="noon")
    response = await asyncio.wait_for(creating, ENDED_ON_THE_CHANGE)
    assert response.status_code == 200
    assert response.headers["Preference-Applied"] == f"wait={MAX_WAIT}"


@pytest.mark.parametrize("prefer", ["wait=soon", "wait=-1", "wait", "return=minimal", "wait=²"])
async def test_a_preference_it_cannot_read_is_ignored_not_refused(
    harness: ToolHarness, prefer: str
) -> None:
    response = await _create(harness, await harness.agent(), prefer)
    assert response.status_code == 202
    assert "Preference-Applied" not in response.headers


async def test_a_wait_ends_when_the_run_parks_for_an_approval(harness: ToolHarness) -> None:
    await harness.policy({"id": "notes", "tool": "notes.write_note", "effect": "require_approval"})
    run_id, epoch = await harness.running(tools=["notes.*"])
    waiting = asyncio.create_task(
        harness.client.get(f"/v1/runs/{run_id}?wait={MAX_WAIT}", headers=harness.admin)
    )
    await asyncio.sleep(0.2)
    assert not waiting.done()
    _, verdict = await harness.authorize(run_id, epoch, 1, "notes.write_note", {"text": "hi"})
    assert verdict["verdict"] == "parked"
    response = await asyncio.wait_for(waiting, ENDED_ON_THE_CHANGE)
    assert response.status_code == 200
    assert (await response.get_json())["status"] == "waiting_approval"


async def test_a_finished_run_is_answered_at_once_and_a_bad_wait_is_refused(
    harness: ToolHarness,
) -> None:
    run_id, epoch = await harness.running()
    await harness.step(run_id, epoch, 1, final_output="done")
    response = await asyncio.wait_for(
        harness.client.get(f"/v1/runs/{run_id}?wait={MAX_WAIT}", headers=harness.admin),
        ENDED_ON_THE_CHANGE,
    )
    assert (await response.get_json())["status"] == "completed"
    for bad in ("61", "-1", "soon"):
        refused = await harness.client.get(f"/v1/runs/{run_id}?wait={bad}", headers=harness.admin)
        assert refused.status_code == 400, bad
        assert "wait" in (await refused.get_data(as_text=True))


async def test_another_projects_run_is_not_found_without_waiting(
    harness: ToolHarness, client: Client, db: asyncpg.Pool
) -> None:
    async with db.acquire() as conn:
        _, other = await create_key(
            conn, "other-admin", Role.ADMIN, f"other-{uuid.uuid4().hex[:6]}", Actor.system("t")
        )
    run_id = await harness.run()
    for url in (f"/v1/runs/{run_id}?wait={MAX_WAIT}", f"/v1/runs/{uuid.uuid4()}?wait=5"):
        response = await asyncio.wait_for(
            client.get(url, headers={"Authorization": f"Bearer {other}"}),
            ENDED_ON_THE_CHANGE,
        )
        assert response.status_code == 404
