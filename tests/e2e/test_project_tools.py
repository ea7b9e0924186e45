"""Issue 16, item 1, on real workers: project A wrote a confidential note through the
`notes` MCP server and project B's run read it back with `notes.read_notes`. With the
server's entry limited to A (`"projects"`), B's run is never offered its tools, and a
model that calls one anyway is refused, under a policy that allows every tool."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest

from services.contract.api import Role
from services.devstack.demo_llm import Reply
from services.gateway.audit import Actor
from services.gateway.store.keys import create_key
from testbed.waiting import eventually
from tests.e2e.conftest import VAULT_PROJECT, Stack
from tests.e2e.driving import TERMINAL, unique_prompt

ALLOW_EVERYTHING = {"rules": [{"id": "everything", "tool": "*", "effect": "allow"}]}


def call(call_id: str, name: str, **arguments: Any) -> dict[str, Any]:
    return {
        "id": call_id,
        "type": "function",
        "function": {"name": name, "arguments": json.dumps(arguments)},
    }


@pytest.fixture(scope="module")
async def project_a(stack: Stack, db: asyncpg.Pool) -> AsyncIterator[httpx.AsyncClient]:
    """An admin of the project the `vault` server is limited to."""
    async with db.acquire() as conn:
        _, secret = await create_key(
            conn, "acme-admin", Role.ADMIN, VAULT_PROJECT, Actor.system("tests")
        )
    async with httpx.AsyncClient(
        base_url=stack.url, headers={"Authorization": f"Bearer {secret}"}, timeout=10
    ) as api:
        yield api


async def _run(api: httpx.AsyncClient, prompt: str) -> dict[str, Any]:
    """A run of a fresh agent naming every tool, in a project whose policy allows all."""
    assert (await api.put("/v1/policies", json=ALLOW_EVERYTHING)).status_code == 200
    agent = f"e2e-{uuid.uuid4().hex[:8]}"
    created = await api.post(
        "/v1/agents", json={"name": agent, "model": "scripted", "tools": ["*"]}
    )
    assert created.status_code == 201, created.text
    started = await api.post("/v1/runs", json={"agent": agent, "input": prompt})
    assert started.status_code == 202, started.text
    run: dict[str, Any] = started.json()
    return run


async def _finished(api: httpx.AsyncClient, run_id: str) -> tuple[dict[str, Any], list[Any]]:
    """The run once it ended, and its steps, as its own project sees them."""

    async def run() -> dict[str, Any]:
        body: dict[str, Any] = (await api.get(f"/v1/runs/{run_id}")).json()
        return body

    ended = await eventually(run, lambda r: r["status"] in TERMINAL, within=20)
    steps: list[Any] = (await api.get(f"/v1/runs/{run_id}/steps")).json()["items"]
    return ended, steps


def _offered(stack: Stack, prompt: str) -> set[str]:
    """Every function the model was shown in the run's calls."""
    return {
        tool["function"]["name"]
        for body in stack.llm.bodies
        if any(m.get("content") == prompt for m in body["messages"] if m["role"] == "user")
        for tool in body.get("tools") or []
    }


async def test_another_project_is_never_offered_a_scoped_tool_and_is_refused_it(
    stack: Stack, project_a: httpx.AsyncClient
) -> None:
    secret = f"the merger is on {uuid.uuid4().hex[:8]}"
    prompt_a = unique_prompt("Note the secret")
    stack.llm.script(
        prompt_a,
        Reply(
            tool_calls=[
                call("c1", "vault__write_note", text=secret),
                call("c2", "vault__caller"),
            ]
        ),
        Reply(content="noted"),
    )
    run_a, steps_a = await _finished(project_a, (await _run(project_a, prompt_a))["id"])
    assert (run_a["status"], run_a["output"]) == ("completed", "noted")
    assert [(s["tool"], s["status"]) for s in steps_a if s["kind"] == "tool_call"] == [
        ("vault.write_note", "completed"),
        ("vault.caller", "completed"),
    ]
    # The server was told whose run called it, in the request's `_meta`.
    assert json.loads(steps_a[2]["output"]) == {
        "ferrumdeck/project": VAULT_PROJECT,
        "ferrumdeck/run_id": run_a["id"],
    }
    assert secret in stack.vault_file.read_text()
    assert "vault__read_notes" in _offered(stack, prompt_a)

    # Project B (the stack's own) allows every tool, and its model calls the vault anyway.
    prompt_b = unique_prompt("Read the other project's notes")
    stack.llm.script(
        prompt_b,
        Reply(tool_calls=[call("c1", "vault__read_notes"), call("c2", "notes__read_notes")]),
        Reply(content="nothing to see"),
    )
    run_b, steps_b = await _finished(stack.api, (await _run(stack.api, prompt_b))["id"])
    assert run_b["status"] == "completed"
    offered = _offered(stack, prompt_b)
    assert "notes__read_notes" in offered  # shared servers are B's too
    assert not any(name.startswith("vault__") for name in offered)
    refused, shared = (s for s in steps_b if s["kind"] == "tool_call")
    assert (refused["status"], refused["decision"]["rule"]) == ("denied", None)
    assert "is not offered to project default" in refused["output"]
    assert VAULT_PROJECT not in json.dumps(steps_b)
    assert shared["status"] == "completed"
    assert secret not in json.dumps(steps_b)

    # Nor is B shown the vault's tools, while A is, without who else may use them.
    listed_b = {t["name"] for t in (await stack.api.get("/v1/tools")).json()["items"]}
    assert "notes.read_notes" in listed_b
    assert not any(name.startswith("vault.") for name in listed_b)
    listed_a = {t["name"]: t for t in (await project_a.get("/v1/tools")).json()["items"]}
    assert listed_a["vault.read_notes"]["shared"] is False
    assert listed_a["notes.read_notes"]["shared"] is True
