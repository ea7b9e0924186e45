"""The queue under pressure. With no worker taking jobs, new runs are refused with 429
and `Retry-After` once the backlog passes its bound, rather than accepted into a queue
nobody drains; they get in again once workers are back. And the runs stream stays
short: acknowledged entries are trimmed, a pending one never is."""

from __future__ import annotations

import asyncio
from typing import Any

from redis.asyncio import Redis

from testbed.waiting import eventually
from tests.chaos.conftest import TUNING
from tests.chaos.invariants import assert_invariants
from tests.support.chaos_load import Integration, Workload
from tests.support.chaos_stack import ChaosStack


async def _queue(stack: ChaosStack) -> dict[str, Any]:
    body: dict[str, Any] = (await stack.api.get("/v1/queue")).json()
    return body


async def test_new_runs_get_429_while_no_worker_takes_them_and_get_in_once_workers_are_back(
    chaos: ChaosStack,
) -> None:
    await chaos.steady()
    agent = await chaos.agent("backpressure")
    work = Workload(chaos.llm, "backpressure")
    codes = await asyncio.gather(
        *(w.terminate(within=TUNING.drain_seconds + 15) for w in chaos.workers)
    )
    assert codes == [0] * len(chaos.workers)

    accepted: list[str] = []
    refused = None
    for _ in range(TUNING.max_queue_lag + 20):
        response = await chaos.api.post("/v1/runs", json={"agent": agent, "input": work.quick()})
        if response.status_code == 429:
            refused = response
            break
        assert response.status_code == 202, response.text
        accepted.append(response.json()["id"])
        await asyncio.sleep(0.05)
    assert refused is not None, f"{len(accepted)} runs accepted with no worker to take them"
    assert int(refused.headers["Retry-After"]) > 0
    assert len(accepted) > TUNING.max_queue_lag
    queue = await _queue(chaos)
    assert (queue["accepting_runs"], queue["max_lag"]) == (False, TUNING.max_queue_lag)
    assert queue["waiting"] > TUNING.max_queue_lag
    # While nobody reads, the backlog stays what it is: one job per run waiting (checked
    # at the end, so the rest of the scenario is seen whatever this shows).
    await asyncio.sleep(TUNING.requeue_after_seconds + 2 * TUNING.sweep_seconds)
    waiting_later = (await _queue(chaos))["waiting"]

    await asyncio.gather(*(w.start() for w in chaos.workers))
    await eventually(lambda: _queue(chaos), lambda q: q["accepting_runs"], within=30)
    response = await chaos.api.post("/v1/runs", json={"agent": agent, "input": work.quick()})
    assert response.status_code == 202, response.text
    accepted.append(response.json()["id"])
    await assert_invariants(chaos, accepted, [agent], within=60)
    statuses = await chaos.db.fetch(
        "SELECT status, error FROM runs WHERE agent_name = $1 AND status <> 'completed'", agent
    )
    assert not statuses, f"runs that only waited for a worker did not complete: {statuses}"
    assert waiting_later == len(accepted) - 1, "GET /v1/queue counts each waiting run once"


async def _stream(redis: Redis, stack: ChaosStack) -> tuple[int, int, int]:
    """The stream's length, how many of its entries are pending, and how many pending
    entries are gone from it (a job some worker holds, trimmed away: must never happen)."""
    stream = stack.streams.runs
    async with redis.pipeline(transaction=True) as reading:  # one consistent view
        reading.xrange(stream)
        reading.xpending_range(stream, stack.streams.group, "-", "+", 10_000)
        entries, pending = await reading.execute()
    present = {entry_id for entry_id, _ in entries}
    lost = sum(1 for p in pending if p["message_id"] not in present)
    return len(entries), len(pending), lost


async def test_the_runs_stream_is_trimmed_but_never_of_a_job_still_pending(
    chaos: ChaosStack,
) -> None:
    agent = await chaos.agent("growth")
    work = Workload(chaos.llm, "growth")
    redis = Redis.from_url(chaos.redis_url)
    client = Integration(chaos.url, chaos.admin_key)
    samples: list[tuple[int, int, int]] = []
    done = asyncio.Event()

    async def watch() -> None:
        while not done.is_set():
            samples.append(await _stream(redis, chaos))
            await asyncio.sleep(0.1)

    watching = asyncio.create_task(watch())
    try:

        async def burst() -> None:
            await client.start_run(agent, work.slow(3))
            for _ in range(8):
                await client.start_run(agent, work.quick())

        await asyncio.gather(*(burst() for _ in range(4)))
        await assert_invariants(chaos, client.accepted, [agent])
        await eventually(lambda: _stream(redis, chaos), lambda s: s == (0, 0, 0), within=15)
    finally:
        done.set()
        await watching
        await client.aclose()
        await redis.aclose()

    assert max(length for length, _, _ in samples) > 0, "the burst was seen in the stream"
    assert not [s for s in samples if s[2]], f"pending jobs trimmed away: {samples}"
