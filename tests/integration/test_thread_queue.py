"""`if_busy: "enqueue"`: a run asked for on a busy thread waits for it instead of being
refused, and is queued, oldest first, as the runs before it end — however they end."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import asyncpg

from services.gateway.store.thread_queue import promote_stranded
from tests.support.harness import ToolHarness


async def _thread(harness: ToolHarness) -> str:
    response = await harness.client.post("/v1/threads", json={}, headers=harness.admin)
    assert response.status_code == 201
    return str((await response.get_json())["id"])


async def _start(harness: ToolHarness, agent: str, thread_id: str, text: str) -> tuple[int, Any]:
    response = await harness.client.post(
        "/v1/runs",
        json={"agent": agent, "input": text, "thread_id": thread_id, "if_busy": "enqueue"},
        headers=harness.admin,
    )
    return response.status_code, await response.get_json()


async def _finish(harness: ToolHarness, run_id: str, answer: str) -> None:
    status, grant = await harness.claim(run_id)
    assert status == 200, grant
    reply = {"message": {"role": "assistant", "content": answer}}
    status, _ = await harness.step(run_id, grant["epoch"], 1, output=reply, final_output=answer)
    assert status == 200


async def _status(harness: ToolHarness, run_id: str) -> str:
    return str((await harness.get(run_id))["status"])


async def test_waiting_runs_are_queued_one_at_a_time_in_the_order_asked(
    harness: ToolHarness,
) -> None:
    agent, thread_id = await harness.agent(), await _thread(harness)
    answers = [await _start(harness, agent, thread_id, f"turn {n}") for n in range(3)]
    assert [(code, body["status"]) for code, body in answers] == [
        (202, "queued"),
        (202, "waiting_thread"),
        (202, "waiting_thread"),
    ]
    first, second, third = (body["id"] for _, body in answers)
    status, refused = await harness.claim(second)
    assert (status, refused["error"]["code"]) == (409, "run_not_claimable")

    await _finish(harness, first, "one")
    assert (await _status(harness, second), await _status(harness, third)) == (
        "queued",
        "waiting_thread",
    )
    status, grant = await harness.claim(second)
    assert [turn["run_id"] for turn in grant["history"]] == [first]
    reply = {"message": {"role": "assistant", "content": "two"}}
    await harness.step(second, grant["epoch"], 1, output=reply, final_output="two")
    assert await _status(harness, third) == "queued"
    await _finish(harness, third, "three")
    assert await _status(harness, third) == "completed"


async def test_many_asked_at_once_all_wait_and_none_is_refused(harness: ToolHarness) -> None:
    agent, thread_id = await harness.agent(), await _thread(harness)
    answers = await asyncio.gather(
        *(_start(harness, agent, thread_id, f"turn {n}") for n in range(12))
    )
    assert {code for code, _ in answers} == {202}
    statuses = sorted(body["status"] for _, body in answers)
    assert statuses == ["queued"] + ["waiting_thread"] * 11


async def test_cancelling_the_open_run_queues_the_next_and_a_waiting_run_can_be_cancelled(
    harness: ToolHarness,
) -> None:
    agent, thread_id = await harness.agent(), await _thread(harness)
    ids = [(await _start(harness, agent, thread_id, f"turn {n}"))[1]["id"] for n in range(3)]
    cancelled = await harness.client.post(f"/v1/runs/{ids[1]}/cancel", headers=harness.admin)
    assert (cancelled.status_code, (await cancelled.get_json())["status"]) == (200, "cancelled")
    assert await _status(harness, ids[2]) == "waiting_thread"

    response = await harness.client.post(f"/v1/runs/{ids[0]}/cancel", headers=harness.admin)
    assert response.status_code == 200
    assert await _status(harness, ids[2]) == "queued"


async def test_a_failed_run_frees_its_thread_for_the_next(harness: ToolHarness) -> None:
    agent, thread_id = await harness.agent(), await _thread(harness)
    first = (await _start(harness, agent, thread_id, "will fail"))[1]["id"]
    second = (await _start(harness, agent, thread_id, "next"))[1]["id"]
    _, grant = await harness.claim(first)
    status, _ = await harness.call(first, "fail", {"epoch": grant["epoch"], "error": "boom"})
    assert status == 204
    assert await _status(harness, second) == "queued"


async def test_a_promoted_run_gets_its_job_published(
    harness: ToolHarness, db: asyncpg.Pool
) -> None:
    """The relay learns of a promotion made in a worker's callback by a notification."""
    agent, thread_id = await harness.agent(), await _thread(harness)
    first = (await _start(harness, agent, thread_id, "first"))[1]["id"]
    second = uuid.UUID((await _start(harness, agent, thread_id, "second"))[1]["id"])
    await _finish(harness, first, "done")
    for _ in range(100):
        if await db.fetchval("SELECT job_id FROM runs WHERE id = $1", second):
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the promoted run's job never reached the stream")


async def test_a_run_left_waiting_behind_a_run_that_ended_unseen_is_queued_by_the_sweep(
    harness: ToolHarness, db: asyncpg.Pool
) -> None:
    """The race the sweep is for: the open run's end committed without seeing the run
    that was about to wait for it."""
    agent, thread_id = await harness.agent(), await _thread(harness)
    first = uuid.UUID((await _start(harness, agent, thread_id, "first"))[1]["id"])
    second = (await _start(harness, agent, thread_id, "second"))[1]["id"]
    await db.execute(
        "UPDATE runs SET status = 'completed', finished_at = now() WHERE id = $1", first
    )
    assert await _status(harness, second) == "waiting_thread"
    assert await promote_stranded(db) >= 1
    assert await _status(harness, second) == "queued"


async def test_without_enqueue_a_busy_thread_still_refuses(harness: ToolHarness) -> None:
    agent, thread_id = await harness.agent(), await _thread(harness)
    await _start(harness, agent, thread_id, "first")
    response = await harness.client.post(
        "/v1/runs",
        json={"agent": agent, "input": "second", "thread_id": thread_id},
        headers=harness.admin,
    )
    assert response.status_code == 409
    assert (await response.get_json())["error"]["code"] == "thread_busy"
