"""Separation of duties: a policy may require another key (or a key of another role) than
the run's creator to approve the run's tool calls."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg
import pytest

from services.contract.api import Role
from services.gateway.audit import Actor
from services.gateway.store.keys import create_key
from testbed.waiting import eventually
from tests.support.harness import ToolHarness

ASK = {"id": "ask", "tool": "notes.*", "effect": "require_approval"}
Headers = dict[str, str]


@pytest.fixture(scope="module")
async def keys(db: asyncpg.Pool) -> dict[str, Headers]:
    """A second admin, an operator and an integration key, beside the tests' admin."""
    made = {}
    async with db.acquire() as conn:
        for name, role in (
            ("admin-2", Role.ADMIN),
            ("operator", Role.OPERATOR),
            ("integration", Role.INTEGRATION),
        ):
            _, secret = await create_key(conn, f"sod-{name}", role, "default", Actor.system("t"))
            made[name] = {"Authorization": f"Bearer {secret}"}
    return made


async def _policy(harness: ToolHarness, distinct_approver: str | None, **rule: Any) -> Any:
    response = await harness.client.put(
        "/v1/policies",
        json={"rules": [{**ASK, **rule}], "approvals": {"distinct_approver": distinct_approver}},
        headers=harness.admin,
    )
    assert response.status_code == 200, await response.get_json()
    return await response.get_json()


async def _parked(harness: ToolHarness, starter: Headers | None = None) -> tuple[str, str]:
    """A run started with `starter` (else the tests' admin) whose call waits for a human."""
    agent = await harness.agent(tools=["notes.*"])
    response = await harness.client.post(
        "/v1/runs", json={"agent": agent, "input": "go"}, headers=starter or harness.admin
    )
    assert response.status_code == 202, await response.get_json()
    run_id = str((await response.get_json())["id"])
    status, grant = await harness.claim(run_id)
    assert status == 200, grant
    _, verdict = await harness.authorize(run_id, grant["epoch"], 1, "notes.write_note", {"t": 1})
    assert verdict["verdict"] == "parked", verdict
    return run_id, str(verdict["approval_id"])


async def _decide(
    harness: ToolHarness, approval_id: str, verb: str, who: Headers
) -> tuple[int, Any]:
    response = await harness.client.post(
        f"/v1/approvals/{approval_id}/{verb}", json={"reason": "checked"}, headers=who
    )
    return response.status_code, await response.get_json()


async def _still_waiting(harness: ToolHarness, run_id: str, approval_id: str) -> None:
    approval = await harness.client.get(f"/v1/approvals/{approval_id}", headers=harness.admin)
    assert (await approval.get_json())["status"] == "pending"
    assert (await harness.get(run_id))["status"] == "waiting_approval"


async def test_with_distinct_key_the_creator_cannot_approve_and_another_key_can(
    harness: ToolHarness, keys: dict[str, Headers]
) -> None:
    await _policy(harness, "key")
    run_id, approval_id = await _parked(harness)
    status, body = await _decide(harness, approval_id, "approve", harness.admin)
    assert (status, body["error"]["code"]) == (403, "separation_of_duties")
    assert "this key started the run" in body["error"]["message"]
    assert body["error"]["details"] == {"distinct_approver": "key", "creator_role": "admin"}
    await _still_waiting(harness, run_id, approval_id)

    status, decided = await _decide(harness, approval_id, "approve", keys["admin-2"])
    assert (status, decided["status"], decided["decided_by"]) == (200, "approved", "sod-admin-2")
    assert (await harness.get(run_id))["status"] == "queued"


async def test_the_creator_may_still_reject_its_own_runs_call(harness: ToolHarness) -> None:
    await _policy(harness, "role")
    run_id, approval_id = await _parked(harness)
    status, decided = await _decide(harness, approval_id, "reject", harness.admin)
    assert (status, decided["status"]) == (200, "rejected")
    (step,) = await harness.steps(run_id)
    assert step["status"] == "rejected"


async def test_with_distinct_role_no_key_of_the_creators_role_may_approve(
    harness: ToolHarness, keys: dict[str, Headers]
) -> None:
    await _policy(harness, "role")
    run_id, approval_id = await _parked(harness)
    status, body = await _decide(harness, approval_id, "approve", keys["admin-2"])
    assert (status, body["error"]["code"]) == (403, "separation_of_duties")
    assert "a key of role admin started the run" in body["error"]["message"]
    await _still_waiting(harness, run_id, approval_id)
    status, decided = await _decide(harness, approval_id, "approve", keys["operator"])
    assert (status, decided["status"]) == (200, "approved")

    # An integration key's run: any admin (another role) may approve it.
    _, approval_id = await _parked(harness, keys["integration"])
    status, decided = await _decide(harness, approval_id, "approve", harness.admin)
    assert (status, decided["status"]) == (200, "approved")


async def test_without_the_setting_the_creator_approves_its_own_run(
    harness: ToolHarness,
) -> None:
    written = await _policy(harness, None)
    assert written["approvals"] == {"distinct_approver": None}
    _, approval_id = await _parked(harness)
    status, decided = await _decide(harness, approval_id, "approve", harness.admin)
    assert (status, decided["status"]) == (200, "approved")


async def test_the_stricter_of_the_asking_and_the_current_version_applies(
    harness: ToolHarness, keys: dict[str, Headers]
) -> None:
    """Switching the setting off does not free a call already waiting under it (the
    creator, an admin, writes policy too); switching it on covers calls already waiting."""
    await _policy(harness, "key")
    run_id, asked_under_key = await _parked(harness)
    await _policy(harness, None)
    status, body = await _decide(harness, asked_under_key, "approve", harness.admin)
    assert (status, body["error"]["code"]) == (403, "separation_of_duties")
    await _still_waiting(harness, run_id, asked_under_key)

    run_id, asked_under_none = await _parked(harness)
    await _policy(harness, "key")
    status, body = await _decide(harness, asked_under_none, "approve", harness.admin)
    assert (status, body["error"]["code"]) == (403, "separation_of_duties")
    status, decided = await _decide(harness, asked_under_none, "approve", keys["operator"])
    assert (status, decided["status"]) == (200, "approved")


async def test_a_run_whose_creator_was_never_recorded_can_be_rejected_not_approved(
    harness: ToolHarness, keys: dict[str, Headers], db: asyncpg.Pool
) -> None:
    """Runs started before migration 0010 have no creator: under the setting no key can be
    shown not to be it, so their calls fail closed. (Their calls were parked under
    versions from before the setting, so turning it off again frees them.)"""
    await _policy(harness, None)
    first, refused = await _parked(harness)
    second, rejected = await _parked(harness)
    await db.execute(
        "UPDATE runs SET created_by_key = NULL WHERE id = ANY($1::uuid[])",
        [uuid.UUID(first), uuid.UUID(second)],
    )
    await _policy(harness, "key")
    status, body = await _decide(harness, refused, "approve", keys["operator"])
    assert (status, body["error"]["code"]) == (403, "separation_of_duties")
    assert "started before FerrumDeck recorded who starts runs" in body["error"]["message"]
    assert body["error"]["details"]["creator_role"] is None
    await _still_waiting(harness, first, refused)
    status, decided = await _decide(harness, rejected, "reject", keys["operator"])
    assert (status, decided["status"]) == (200, "rejected")

    await _policy(harness, None)
    status, decided = await _decide(harness, refused, "approve", keys["operator"])
    assert (status, decided["status"]) == (200, "approved")


async def test_expiry_is_not_held_up_by_the_setting(harness: ToolHarness) -> None:
    await _policy(harness, "role", approval_ttl_seconds=1)
    _, approval_id = await _parked(harness)

    async def status_of_approval() -> str:
        response = await harness.client.get(f"/v1/approvals/{approval_id}", headers=harness.admin)
        return str((await response.get_json())["status"])

    assert await eventually(status_of_approval, lambda s: s == "expired", within=5) == "expired"


async def test_the_setting_is_validated_strictly_and_kept_with_its_version(
    harness: ToolHarness,
) -> None:
    for approvals in ({"distinct_approver": "team"}, {"distinct": "key"}, "key"):
        response = await harness.client.put(
            "/v1/policies", json={"rules": [ASK], "approvals": approvals}, headers=harness.admin
        )
        assert response.status_code == 400, approvals
        assert (await response.get_json())["error"]["code"] == "validation_error"

    written = await _policy(harness, "role")
    assert written["approvals"] == {"distinct_approver": "role"}
    later = await harness.policy(ASK)  # no `approvals`: off
    state = await (await harness.client.get("/v1/policies", headers=harness.admin)).get_json()
    assert (state["version"], state["approvals"]) == (later, {"distinct_approver": None})
    by_version = {v["version"]: v["approvals"] for v in state["history"]}
    assert by_version[written["version"]] == {"distinct_approver": "role"}
    assert by_version[later] == {"distinct_approver": None}
