"""A tool whose MCP server is scoped to some projects is theirs alone: the gateway
authorises it only for runs of those projects, whatever another project's policy says,
and lists it only to them (issue 16: project B read project A's notes)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import asyncpg
import pytest
from quart.typing import TestClientProtocol as Client

from services.contract.api import Role
from services.gateway.audit import Actor
from services.gateway.store.keys import create_key
from tests.support.harness import ToolHarness, tool_spec

ALLOW_EVERYTHING = {"id": "everything", "tool": "*", "effect": "allow"}


@dataclass
class Projects:
    a: ToolHarness
    b: ToolHarness
    a_name: str
    b_name: str
    vault: str  # a server scoped to project A, fresh for each test


async def _admin_of(db: asyncpg.Pool, project: str) -> dict[str, str]:
    async with db.acquire() as conn:
        _, secret = await create_key(
            conn, f"admin-{project}", Role.ADMIN, project, Actor.system("tests")
        )
    return {"Authorization": f"Bearer {secret}"}


@pytest.fixture
async def projects(client: Client, db: asyncpg.Pool, worker: dict[str, str]) -> Projects:
    suffix = uuid.uuid4().hex[:8]
    a_name, b_name = f"acme-{suffix}", f"beta-{suffix}"
    a = ToolHarness(client, await _admin_of(db, a_name), worker, lists_tools=False)
    b = ToolHarness(client, await _admin_of(db, b_name), worker, lists_tools=False)
    # Both projects allow every tool, their agents name every tool: only the scope stops B.
    await a.policy(ALLOW_EVERYTHING)
    await b.policy(ALLOW_EVERYTHING)
    return Projects(a, b, a_name, b_name, f"vault{suffix}")


async def _listed(harness: ToolHarness) -> list[dict[str, Any]]:
    response = await harness.client.get("/v1/tools", headers=harness.admin)
    assert response.status_code == 200
    items: list[dict[str, Any]] = (await response.get_json())["items"]
    return items


def _worker() -> str:
    return f"w-{uuid.uuid4().hex[:8]}"


async def test_a_scoped_tool_is_refused_to_another_project_even_when_its_policy_allows_all(
    projects: Projects,
) -> None:
    worker = _worker()
    secret = f"{projects.vault}.read_notes"
    shared = f"{projects.vault}_public.add"
    await projects.a.list_tools(
        worker, tool_spec(secret, projects=[projects.a_name]), tool_spec(shared)
    )

    run_id = await projects.b.run(tools=["*"])
    status, grant = await projects.b.claim(run_id, worker)
    assert status == 200
    status, verdict = await projects.b.authorize(run_id, int(grant["epoch"]), 1, secret)
    assert (status, verdict["verdict"], verdict["decision"]["rule"]) == (200, "denied", None)
    explanation = verdict["decision"]["explanation"]
    assert f"{secret} is not offered to project {projects.b_name}" in explanation
    assert projects.a_name not in explanation
    (step,) = await projects.b.steps(run_id)
    assert (step["status"], step["tool"]) == ("denied", secret)
    # A shared tool of the same worker is still B's to call.
    status, verdict = await projects.b.authorize(run_id, int(grant["epoch"]), 2, shared)
    assert (status, verdict["verdict"]) == (200, "execute")

    run_id = await projects.a.run(tools=["*"])
    status, grant = await projects.a.claim(run_id, worker)
    status, verdict = await projects.a.authorize(run_id, int(grant["epoch"]), 1, secret)
    assert (status, verdict["verdict"], verdict["decision"]["rule"]) == (
        200,
        "execute",
        "everything",
    )


async def test_the_worker_holding_the_lease_decides_not_another_that_shares_the_tool(
    projects: Projects,
) -> None:
    """A tool two workers offer with different scopes is judged by the listing of the
    worker whose lease the call is made under; a tool that worker never listed is refused
    (fail closed), even though another worker offers it to everyone."""
    tool = f"{projects.vault}.read_notes"
    everyone, only_a, silent = _worker(), _worker(), _worker()
    await projects.a.list_tools(everyone, tool_spec(tool))
    await projects.a.list_tools(only_a, tool_spec(tool, projects=[projects.a_name]))

    verdicts = {}
    for worker in (everyone, only_a, silent):
        run_id = await projects.b.run(tools=["*"])
        status, grant = await projects.b.claim(run_id, worker)
        assert status == 200
        _, verdict = await projects.b.authorize(run_id, int(grant["epoch"]), 1, tool)
        verdicts[worker] = verdict["verdict"]
    assert verdicts == {everyone: "execute", only_a: "denied", silent: "denied"}


async def test_an_approved_call_is_not_made_under_a_worker_that_does_not_offer_the_tool(
    projects: Projects,
) -> None:
    tool = f"{projects.vault}.write_note"
    first, second = _worker(), _worker()
    await projects.a.list_tools(first, tool_spec(tool, projects=[projects.a_name]))
    await projects.a.list_tools(second, tool_spec(tool, projects=[f"other-{projects.vault}"]))
    await projects.a.policy({"id": "ask", "tool": tool, "effect": "require_approval"})
    run_id = await projects.a.run(tools=["*"])
    _, grant = await projects.a.claim(run_id, first)
    _, verdict = await projects.a.authorize(run_id, int(grant["epoch"]), 1, tool, {"text": "x"})
    assert verdict["verdict"] == "parked"
    status, _ = await projects.a.decide(verdict["approval_id"], "approve")
    assert status == 200

    status, grant = await projects.a.claim(run_id, second)
    assert status == 200
    _, verdict = await projects.a.authorize(run_id, int(grant["epoch"]), 1, tool, {"text": "x"})
    assert verdict["verdict"] == "denied"
    assert (
        f"{tool} is not offered to project {projects.a_name}"
        in (verdict["decision"]["explanation"])
    )
    (step,) = await projects.a.steps(run_id)
    assert step["status"] == "denied"
    # The step is settled: it is never made, by this claim or a later one.
    status, ack = await projects.a.step(
        run_id, int(grant["epoch"]), 1, kind="tool_call", tool=tool, output="written"
    )
    assert (status, ack["replayed"], ack["status"]) == (200, True, "denied")


async def test_the_tool_list_shows_a_scoped_tool_only_to_its_projects_and_never_its_scope(
    projects: Projects,
) -> None:
    worker = _worker()
    secret = f"{projects.vault}.read_notes"
    shared = f"{projects.vault}_public.add"
    await projects.a.list_tools(
        worker,
        tool_spec(secret, projects=[projects.a_name, projects.b_name + "x"]),
        tool_spec(shared),
    )

    seen_by_b = {item["name"]: item for item in await _listed(projects.b)}
    assert secret not in seen_by_b
    assert seen_by_b[shared]["shared"] is True

    seen_by_a = {item["name"]: item for item in await _listed(projects.a)}
    assert seen_by_a[secret]["shared"] is False
    assert "projects" not in seen_by_a[secret]
    assert projects.b_name + "x" not in str(seen_by_a[secret])
    assert seen_by_a[shared]["shared"] is True


async def test_a_policy_warns_only_about_tools_of_its_own_project(projects: Projects) -> None:
    """The policy `PUT` judges conditions against known tools' schemas; a tool scoped to
    another project is not known to this one, so its schema leaks nothing."""
    worker = _worker()
    schema = {"type": "object", "properties": {"account": {"type": "string"}}}
    secret = f"{projects.vault}.transfer"
    await projects.a.list_tools(
        worker, tool_spec(secret, projects=[projects.a_name], input_schema=schema)
    )
    rule = {"id": "big", "tool": secret, "effect": "deny",
            "when": {"args": {"account": {"gt": 5}}}}  # fmt: skip
    for harness, warned in ((projects.a, True), (projects.b, False)):
        response = await harness.client.put(
            "/v1/policies", json={"rules": [rule]}, headers=harness.admin
        )
        assert response.status_code == 200
        assert bool((await response.get_json())["warnings"]) is warned


@pytest.mark.parametrize(
    "projects_field",
    [[], ["Not A Project"], ["acme", "acme"], "acme"],
)
async def test_a_report_with_a_malformed_scope_is_refused(
    harness: ToolHarness, projects_field: Any
) -> None:
    response = await harness.client.put(
        "/v1/worker/tools",
        json={"worker_id": _worker(), "tools": [tool_spec("x.y", projects=projects_field)]},
        headers=harness.worker,
    )
    assert response.status_code == 400
