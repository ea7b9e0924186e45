"""Threads through the API, with the harness as the worker: one open run at a time, the
history a claim carries, the messages listed, and another project kept out."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import asyncpg
from quart.typing import TestClientProtocol as Client

from services.contract.api import Role
from services.gateway.audit import Actor
from services.gateway.store.keys import create_key
from tests.support.harness import ToolHarness


async def _thread(harness: ToolHarness) -> str:
    response = await harness.client.post("/v1/threads", json={}, headers=harness.admin)
    assert response.status_code == 201
    return str((await response.get_json())["id"])


async def _start(
    harness: ToolHarness, agent: str, thread_id: str, text: str, **headers: str
) -> tuple[int, Any]:
    response = await harness.client.post(
        "/v1/runs",
        json={"agent": agent, "input": text, "thread_id": thread_id},
        headers={**harness.admin, **headers},
    )
    return response.status_code, await response.get_json()


def _reply(content: str | None = None, **fields: Any) -> dict[str, Any]:
    return {"message": {"role": "assistant", "content": content, **fields}}


async def test_a_run_on_a_thread_is_claimed_with_the_earlier_runs(harness: ToolHarness) -> None:
    agent, thread_id = await harness.agent(), await _thread(harness)
    status, first = await _start(harness, agent, thread_id, "hi")
    assert (status, first["thread_id"]) == (202, thread_id)
    _, grant = await harness.claim(first["id"])
    assert grant["history"] == []
    await harness.step(first["id"], grant["epoch"], 1, output=_reply("hello"), final_output="hello")
    _, second = await _start(harness, agent, thread_id, "and now?")
    _, grant = await harness.claim(second["id"])
    (turn,) = grant["history"]
    assert (turn["run_id"], turn["status"], turn["input"]) == (first["id"], "completed", "hi")
    assert [s["output"] for s in turn["steps"]] == [_reply("hello")]
    assert grant["input"] == "and now?"


async def test_a_thread_runs_one_run_at_a_time_even_when_asked_at_once(
    harness: ToolHarness,
) -> None:
    agent, thread_id = await harness.agent(), await _thread(harness)
    answers = await asyncio.gather(
        *(_start(harness, agent, thread_id, f"turn {n}") for n in range(12))
    )
    statuses = sorted(status for status, _ in answers)
    assert statuses == [202] + [409] * 11
    refused = [body for status, body in answers if status == 409]
    assert {body["error"]["code"] for body in refused} == {"thread_busy"}
    (started,) = [body for status, body in answers if status == 202]
    shown = await (
        await harness.client.get(f"/v1/threads/{thread_id}", headers=harness.admin)
    ).get_json()
    assert (shown["runs"], shown["open_run_id"]) == (1, started["id"])


async def test_an_idempotent_retry_on_a_busy_thread_replays_instead_of_refusing(
    harness: ToolHarness,
) -> None:
    agent, thread_id = await harness.agent(), await _thread(harness)
    first = await _start(harness, agent, thread_id, "once", **{"Idempotency-Key": "k-1"})
    again = await _start(harness, agent, thread_id, "once", **{"Idempotency-Key": "k-1"})
    assert (first[0], again[0]) == (202, 202)
    assert first[1]["id"] == again[1]["id"]


async def test_a_cancelled_run_leaves_the_thread_usable_and_its_calls_answered(
    harness: ToolHarness,
) -> None:
    agent, thread_id = await harness.agent(tools=["notes.*"]), await _thread(harness)
    _, first = await _start(harness, agent, thread_id, "write it down")
    _, grant = await harness.claim(first["id"])
    call = {
        "id": "c1",
        "type": "function",
        "function": {"name": "notes__write_note", "arguments": "{}"},
    }
    await harness.step(first["id"], grant["epoch"], 1, output=_reply(tool_calls=[call]))
    cancel = await harness.client.post(f"/v1/runs/{first['id']}/cancel", headers=harness.admin)
    assert cancel.status_code == 200
    status, second = await _start(harness, agent, thread_id, "never mind")
    assert status == 202
    listed = await (
        await harness.client.get(f"/v1/threads/{thread_id}/messages", headers=harness.admin)
    ).get_json()
    assert [(m["message"]["role"], m["run_status"]) for m in listed["items"]] == [
        ("user", "cancelled"),
        ("assistant", "cancelled"),
        ("tool", "cancelled"),
        ("user", "queued"),
    ]
    assert listed["items"][2]["message"] == {
        "role": "tool",
        "tool_call_id": "c1",
        "content": "not run: the run was cancelled",
    }
    assert listed["items"][3]["run_id"] == second["id"]


async def test_messages_page_through_the_whole_conversation_once(harness: ToolHarness) -> None:
    agent, thread_id = await harness.agent(), await _thread(harness)
    for n in range(3):
        _, run = await _start(harness, agent, thread_id, f"question {n}")
        _, grant = await harness.claim(run["id"])
        await harness.step(
            run["id"], grant["epoch"], 1, output=_reply(f"answer {n}"), final_output=f"answer {n}"
        )
    seen: list[str] = []
    cursor = None
    while True:
        query = "limit=2" + (f"&cursor={cursor}" if cursor else "")
        page = await (
            await harness.client.get(
                f"/v1/threads/{thread_id}/messages?{query}", headers=harness.admin
            )
        ).get_json()
        seen += [m["message"]["content"] for m in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [t for n in range(3) for t in (f"question {n}", f"answer {n}")]
    bad = await harness.client.get(
        f"/v1/threads/{thread_id}/messages?cursor=bm9wZQ", headers=harness.admin
    )
    assert bad.status_code == 400


async def test_another_projects_thread_is_neither_seen_nor_continued(
    harness: ToolHarness, client: Client, db: asyncpg.Pool
) -> None:
    thread_id = await _thread(harness)
    async with db.acquire() as conn:
        _, secret = await create_key(
            conn, "other", Role.ADMIN, f"other-{uuid.uuid4().hex[:6]}", Actor.system("t")
        )
    other = ToolHarness(client, {"Authorization": f"Bearer {secret}"}, harness.worker)
    for url in (f"/v1/threads/{thread_id}", f"/v1/threads/{thread_id}/messages"):
        assert (await client.get(url, headers=other.admin)).status_code == 404
    status, body = await _start(other, await other.agent(), thread_id, "let me in")
    assert (status, body["error"]["code"]) == (422, "unknown_thread")
    listed = await (await client.get("/v1/threads", headers=other.admin)).get_json()
    assert thread_id not in [t["id"] for t in listed["items"]]


async def test_a_dead_lettered_run_is_not_queued_again_over_its_threads_open_run(
    harness: ToolHarness, db: asyncpg.Pool
) -> None:
    agent, thread_id = await harness.agent(), await _thread(harness)
    _, first = await _start(harness, agent, thread_id, "poison")
    await db.execute(
        """UPDATE runs SET status = 'failed', dead_lettered_at = now(), finished_at = now()
            WHERE id = $1""",
        uuid.UUID(first["id"]),
    )
    status, _ = await _start(harness, agent, thread_id, "carry on")
    assert status == 202
    response = await harness.client.post(f"/v1/runs/{first['id']}/requeue", headers=harness.admin)
    assert response.status_code == 409
    assert (await response.get_json())["error"]["code"] == "thread_busy"


async def test_an_agents_history_limit_is_kept_and_handed_to_the_worker(
    harness: ToolHarness,
) -> None:
    agent = await harness.agent(history={"max_tokens": 4000})
    shown = await (
        await harness.client.get(f"/v1/agents/{agent}", headers=harness.admin)
    ).get_json()
    assert shown["items"][0]["history"] == {"max_tokens": 4000}
    _, run = await _start(harness, agent, await _thread(harness), "hi")
    _, grant = await harness.claim(run["id"])
    assert grant["agent"]["history"] == {"max_tokens": 4000}
    for bad in ({"max_tokens": 0}, {"tokens": 5}):
        response = await harness.client.post(
            "/v1/agents",
            json={"name": "limited", "model": "scripted", "history": bad},
            headers=harness.admin,
        )
        assert response.status_code == 400, bad
