"""Agents calling real MCP tools under policy, with a human deciding parked calls."""

from __future__ import annotations

import json
import uuid
from typing import Any

import asyncpg

from services.devstack.demo_llm import Reply
from testbed.waiting import eventually
from tests.e2e.conftest import Stack
from tests.e2e.driving import (
    get_run,
    list_steps,
    register_agent,
    start_run,
    unique_prompt,
    wait_finished,
)

POLICY = [
    {"id": "time-ok", "tool": "time.*", "effect": "allow"},
    {"id": "notes-need-a-human", "tool": "notes.write_note", "effect": "require_approval"},
    {
        "id": "no-secrets",
        "tool": "notes.write_note",
        "effect": "deny",
        "when": {"args": {"text": {"regex": "(?i)password"}}},
    },
    {"id": "notes-slow", "tool": "notes.slow", "effect": "allow"},
]


def call(call_id: str, name: str, **arguments: Any) -> dict[str, Any]:
    return {
        "id": call_id,
        "type": "function",
        "function": {"name": name, "arguments": json.dumps(arguments)},
    }


async def _policy(stack: Stack) -> None:
    response = await stack.api.put("/v1/policies", json={"rules": POLICY})
    assert response.status_code == 200, response.text


async def _pending_approval(stack: Stack, run_id: str) -> dict[str, Any]:
    async def approvals() -> list[dict[str, Any]]:
        response = await stack.api.get(f"/v1/approvals?run_id={run_id}&status=pending")
        items: list[dict[str, Any]] = response.json()["items"]
        return items

    (approval,) = await eventually(approvals, lambda items: len(items) == 1, within=20)
    return approval


async def test_allowed_denied_and_approved_calls_all_show_in_the_steps(stack: Stack) -> None:
    await _policy(stack)
    agent = await register_agent(stack, tools=["time.*", "notes.*"])
    prompt = unique_prompt("What time is it in Oslo? Note it.")
    stack.llm.script(
        prompt,
        Reply(
            tool_calls=[
                call("c1", "time__get_current_time", timezone="Europe/Oslo"),
                call("c2", "notes__write_note", text="my password is hunter2"),
            ]
        ),
        Reply(tool_calls=[call("c3", "notes__write_note", text=f"Oslo time noted ({prompt})")]),
        Reply(content="Noted the time in Oslo."),
    )
    run_id = (await start_run(stack, agent, prompt))["id"]

    approval = await _pending_approval(stack, run_id)
    assert (approval["tool"], approval["rule"]) == ("notes.write_note", "notes-need-a-human")
    assert approval["arguments"] == {"text": f"Oslo time noted ({prompt})"}
    assert (await get_run(stack, run_id))["status"] == "waiting_approval"

    decided = await stack.api.post(
        f"/v1/approvals/{approval['id']}/approve", json={"reason": "fine by me"}
    )
    assert decided.status_code == 200, decided.text
    run = await wait_finished(stack, run_id)
    assert (run["status"], run["output"]) == ("completed", "Noted the time in Oslo.")

    steps = await list_steps(stack, run_id)
    summary = [(s["seq"], s["kind"], s["status"], s["tool"]) for s in steps]
    assert summary == [
        (1, "llm_call", "completed", None),
        (2, "tool_call", "completed", "time.get_current_time"),
        (3, "tool_call", "denied", "notes.write_note"),
        (4, "llm_call", "completed", None),
        (5, "tool_call", "completed", "notes.write_note"),
        (6, "llm_call", "completed", None),
    ]
    assert steps[1]["decision"]["rule"] == "time-ok"
    assert "Europe/Oslo" in steps[1]["output"]
    assert steps[2]["decision"]["rule"] == "no-secrets"
    assert steps[4]["decision"]["approved_by"] == "test-admin"
    assert steps[4]["input"] == {"text": f"Oslo time noted ({prompt})"}
    notes = stack.notes_file.read_text().splitlines()
    assert notes.count(f"Oslo time noted ({prompt})") == 1
    assert not any("hunter2" in line for line in notes)

    told = steps[3]["input"]["messages"]
    tool_results = {m["tool_call_id"]: m["content"] for m in told if m["role"] == "tool"}
    assert "Europe/Oslo" in tool_results["c1"]
    assert tool_results["c2"].startswith("denied by policy")


async def test_a_rejected_call_is_never_made_and_the_model_is_told_why(stack: Stack) -> None:
    await _policy(stack)
    agent = await register_agent(stack, tools=["notes.*"])
    prompt = unique_prompt("Write a note")
    stack.llm.script(
        prompt,
        Reply(tool_calls=[call("c1", "notes__write_note", text=f"rejected note {prompt}")]),
        Reply(content="Understood, no note."),
    )
    run_id = (await start_run(stack, agent, prompt))["id"]
    approval = await _pending_approval(stack, run_id)
    await stack.api.post(f"/v1/approvals/{approval['id']}/reject", json={"reason": "not now"})
    run = await wait_finished(stack, run_id)
    assert run["output"] == "Understood, no note."
    steps = await list_steps(stack, run_id)
    assert steps[1]["status"] == "rejected"
    last_prompt = steps[2]["input"]["messages"]
    assert "not now" in last_prompt[-1]["content"]
    notes = stack.notes_file.read_text() if stack.notes_file.exists() else ""
    assert f"rejected note {prompt}" not in notes


async def test_a_tool_error_is_reported_to_the_model_not_a_crash(stack: Stack) -> None:
    response = await stack.api.put(
        "/v1/policies", json={"rules": [{"id": "all-notes", "tool": "notes.*", "effect": "allow"}]}
    )
    assert response.status_code == 200
    agent = await register_agent(stack, tools=["notes.*"])
    prompt = unique_prompt("fail please")
    stack.llm.script(
        prompt,
        Reply(tool_calls=[call("c1", "notes__fail", message="disk on fire")]),
        Reply(content="The tool failed."),
    )
    run = await wait_finished(stack, (await start_run(stack, agent, prompt))["id"])
    assert run["status"] == "completed"
    steps = await list_steps(stack, run["id"])
    assert steps[1]["status"] == "failed"
    assert "disk on fire" in steps[1]["error"]


async def _rules(stack: Stack, *rules: dict[str, Any]) -> None:
    response = await stack.api.put("/v1/policies", json={"rules": list(rules)})
    assert response.status_code == 200, response.text


ALLOW_NOTES = {"id": "allow", "tool": "notes.*", "effect": "allow"}


async def test_arguments_the_tools_schema_refuses_never_reach_the_tool_or_the_policy(
    stack: Stack,
) -> None:
    """Issue 14, item 1: `"1000"` for an integer stepped around a `gt` deny rule and the
    MCP server, coercing it, computed with 1000."""
    await _rules(
        stack,
        ALLOW_NOTES,
        {
            "id": "big",
            "tool": "notes.add",
            "when": {"args": {"a": {"gt": 100}}},
            "effect": "deny",
        },
    )
    agent = await register_agent(stack, tools=["notes.*"])
    prompt = unique_prompt("add big numbers")
    stack.llm.script(
        prompt,
        Reply(tool_calls=[call("c1", "notes__add", a="1000", b=1)]),
        Reply(content="could not add"),
    )
    run = await wait_finished(stack, (await start_run(stack, agent, prompt))["id"])
    assert (run["status"], run["output"]) == ("completed", "could not add")
    steps = await list_steps(stack, run["id"])
    refused = steps[1]
    assert (refused["tool"], refused["status"], refused["input"]) == (
        "notes.add",
        "denied",
        {"a": "1000", "b": 1},
    )
    assert refused["decision"]["rule"] is None
    explanation = refused["decision"]["explanation"]
    assert "input schema" in explanation
    assert "$.a" in explanation
    assert "integer" in explanation
    assert "1000" not in explanation
    told = steps[2]["input"]["messages"][-1]
    assert (told["tool_call_id"], told["content"]) == ("c1", refused["output"])
    assert "input schema" in told["content"]
    assert not any("1001" in json.dumps(step.get("output")) for step in steps)


async def test_an_argument_the_tool_does_not_declare_does_not_defeat_the_loop_guard(
    stack: Stack,
) -> None:
    """Issue 14, item 5: an ignored extra argument made every call look new."""
    await _rules(
        stack,
        {"id": "loop", "tool": "*", "effect": "deny", "when": {"identical_in_a_row": {"gte": 2}}},
        ALLOW_NOTES,
    )
    agent = await register_agent(stack, tools=["notes.*"])
    prompt = unique_prompt("add again and again")
    stack.llm.script(
        prompt,
        Reply(tool_calls=[call("c1", "notes__add", a=1, b=2)]),
        Reply(tool_calls=[call("c2", "notes__add", b=2, a=1, nonce="x1")]),
        Reply(content="stopped"),
    )
    run = await wait_finished(stack, (await start_run(stack, agent, prompt))["id"])
    assert run["status"] == "completed"
    steps = await list_steps(stack, run["id"])
    calls = [s for s in steps if s["kind"] == "tool_call"]
    assert [(s["status"], s["input"]) for s in calls] == [
        ("completed", {"a": 1, "b": 2}),
        ("denied", {"a": 1, "b": 2}),
    ]
    assert calls[1]["decision"]["rule"] == "loop"


async def test_a_worker_killed_mid_call_does_not_repeat_the_call_blindly(
    stack: Stack, db: asyncpg.Pool
) -> None:
    """Runs last in this module: it kills one of the two workers."""
    await _policy(stack)
    agent = await register_agent(stack, tools=["notes.*"])
    prompt = unique_prompt("slow side effect")
    stack.llm.script(
        prompt,
        Reply(tool_calls=[call("c1", "notes__slow", seconds=30)]),
        Reply(content="finished after retry"),
    )
    run_id = (await start_run(stack, agent, prompt))["id"]

    async def started_steps() -> list[dict[str, Any]]:
        return [s for s in await list_steps(stack, run_id) if s["status"] == "started"]

    await eventually(started_steps, lambda s: len(s) == 1, within=20)
    owner = await db.fetchval("SELECT lease_owner FROM runs WHERE id = $1", uuid.UUID(run_id))
    holder = stack.workers[int(owner.rsplit("-", 1)[1]) - 1]
    holder.process.kill()
    holder.process.wait()
    # The surviving worker reclaims the dead one's entry once it idled past 6 s; the
    # lease (5 s) has expired by then, so the claim succeeds under a new epoch.
    approval = await _pending_approval(stack, run_id)
    assert "may or may not" in approval["explanation"]
    steps = await list_steps(stack, run_id)
    assert [s["status"] for s in steps[1:]] == ["outcome_unknown", "waiting_approval"]
