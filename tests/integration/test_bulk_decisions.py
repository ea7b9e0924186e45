"""Deciding many parked calls with one reason (`POST /v1/approvals/decide`): an operator
after a worker died holds dozens of calls of unknown outcome, all to be refused alike.
All of them are decided in one transaction, each audited as if alone, or none is."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg

from services.contract.api import Role
from services.gateway.audit import Actor
from services.gateway.store.keys import create_key
from tests.support.harness import ToolHarness

ASK = {"id": "ask", "tool": "notes.*", "effect": "require_approval"}


async def _parked(harness: ToolHarness, n: int) -> list[str]:
    """`n` runs, each with one call waiting for a human; their approval ids."""
    await harness.policy(ASK)
    agent = await harness.agent(tools=["notes.*"])
    runs = []
    for i in range(n):
        response = await harness.client.post(
            "/v1/runs", json={"agent": agent, "input": f"bulk {i}"}, headers=harness.admin
        )
        run_id = str((await response.get_json())["id"])
        status, grant = await harness.claim(run_id)
        assert status == 200, grant
        _, verdict = await harness.authorize(
            run_id, grant["epoch"], 1, "notes.write_note", {"i": i}
        )
        assert verdict["verdict"] == "parked", verdict
        runs.append(run_id)
    return [(await harness.approvals(run_id=run_id))[0]["id"] for run_id in runs]


async def _decide(harness: ToolHarness, ids: list[str], headers: Any = None, **body: Any) -> Any:
    return await harness.client.post(
        "/v1/approvals/decide",
        json={"approval_ids": ids, "approve": False, "reason": "worker lost", **body},
        headers=headers or harness.admin,
    )


async def test_fifty_calls_are_rejected_in_one_request_and_each_is_audited(
    harness: ToolHarness, db: asyncpg.Pool
) -> None:
    ids = await _parked(harness, 50)
    response = await _decide(harness, ids)
    assert response.status_code == 200, await response.get_json()
    decided = (await response.get_json())["items"]
    assert sorted(a["id"] for a in decided) == sorted(ids)
    assert {(a["status"], a["reason"]) for a in decided} == {("rejected", "worker lost")}
    audited = await db.fetchval(
        "SELECT count(*) FROM audit_events WHERE action = 'approval.rejected' "
        "AND target = ANY($1::text[])",
        [f"approval:{i}" for i in ids],
    )
    assert audited == 50
    runs = {a["run_id"] for a in decided}
    statuses = {(await harness.get(run_id))["status"] for run_id in runs}
    assert statuses == {"queued"}, "every run goes on, told its call was refused"


async def test_one_already_decided_refuses_the_lot_and_names_it(harness: ToolHarness) -> None:
    first, *rest = await _parked(harness, 3)
    status, _ = await harness.decide(first, "approve")
    assert status == 200
    response = await _decide(harness, [*rest, first])
    body = await response.get_json()
    assert response.status_code == 409, body
    assert (body["error"]["code"], body["error"]["details"]["approval_id"]) == (
        "approval_decided",
        first,
    )
    for approval_id in rest:
        got = await harness.client.get(f"/v1/approvals/{approval_id}", headers=harness.admin)
        assert (await got.get_json())["status"] == "pending", "none of the batch was decided"


async def test_another_projects_approvals_are_not_found(
    harness: ToolHarness, db: asyncpg.Pool
) -> None:
    ids = await _parked(harness, 2)
    async with db.acquire() as conn:
        _, secret = await create_key(
            conn, "bulk-other", Role.ADMIN, f"other-{uuid.uuid4().hex[:6]}", Actor.system("t")
        )
    response = await _decide(harness, ids, {"Authorization": f"Bearer {secret}"})
    assert response.status_code == 404
    got = await harness.client.get(f"/v1/approvals/{ids[0]}", headers=harness.admin)
    assert (await got.get_json())["status"] == "pending"


async def test_a_batch_is_bounded_and_needs_a_reason(harness: ToolHarness) -> None:
    too_many = [str(uuid.uuid4()) for _ in range(201)]
    assert (await _decide(harness, too_many)).status_code == 400
    assert (await _decide(harness, [])).status_code == 400
    assert (await _decide(harness, [str(uuid.uuid4())], reason="")).status_code == 400
