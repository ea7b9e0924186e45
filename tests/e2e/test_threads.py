"""A conversation over three runs of a thread, through real workers, MCP and LiteLLM.

The scripted model tells conversations apart by their first user message, which on a
thread is the first run's input, and answers by the number of assistant turns so far:
so one script is the whole conversation, and the third run can only get its reply if
the worker sent the history.
"""

from __future__ import annotations

from typing import Any

from services.devstack.demo_llm import Reply
from tests.e2e.conftest import Stack
from tests.e2e.driving import register_agent, unique_prompt, wait_finished
from tests.e2e.test_tools import call


async def _turn(stack: Stack, agent: str, thread_id: str, text: str) -> dict[str, Any]:
    response = await stack.api.post(
        "/v1/runs", json={"agent": agent, "input": text, "thread_id": thread_id}
    )
    assert response.status_code == 202, response.text
    return await wait_finished(stack, response.json()["id"])


async def test_the_third_turn_is_sent_the_whole_conversation(stack: Stack) -> None:
    await stack.api.put(
        "/v1/policies", json={"rules": [{"id": "time-ok", "tool": "time.*", "effect": "allow"}]}
    )
    agent = await register_agent(stack, tools=["time.*"], system_prompt="Be brief.")
    first = unique_prompt("Hello, I am in Oslo.")
    stack.llm.script(
        first,
        Reply(content="Hello! Noted: Oslo."),
        Reply(tool_calls=[call("t1", "time__get_current_time", timezone="Europe/Oslo")]),
        Reply(content="It is the time the tool said."),
        Reply(content="You are in Oslo."),
    )
    thread = (await stack.api.post("/v1/threads", json={"metadata": {"user": "u1"}})).json()
    runs = [
        await _turn(stack, agent, thread["id"], text)
        for text in (first, "What time is it here?", "Where am I?")
    ]
    assert [r["output"] for r in runs] == [
        "Hello! Noted: Oslo.",
        "It is the time the tool said.",
        "You are in Oslo.",
    ]
    assert {r["thread_id"] for r in runs} == {thread["id"]}

    sent = [b["messages"] for b in stack.llm.bodies if first in str(b["messages"])][-1]
    roles = [m["role"] for m in sent]
    assert roles == [
        "system",
        "user",
        "assistant",
        "user",
        "assistant",
        "tool",
        "assistant",
        "user",
    ]
    assert [m["content"] for m in sent if m["role"] == "user"] == [
        first,
        "What time is it here?",
        "Where am I?",
    ]
    (asked,) = sent[4]["tool_calls"]
    assert asked["function"]["name"] == "time__get_current_time"
    assert sent[5]["tool_call_id"] == asked["id"]
    assert "Europe/Oslo" in sent[5]["content"]

    listed = (await stack.api.get(f"/v1/threads/{thread['id']}/messages?limit=200")).json()
    assert [m["message"]["role"] for m in listed["items"]] == [*roles[1:], "assistant"]
    shown = (await stack.api.get(f"/v1/threads/{thread['id']}")).json()
    assert (shown["runs"], shown["open_run_id"], shown["metadata"]) == (3, None, {"user": "u1"})
