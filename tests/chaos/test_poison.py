"""A poison run: one that kills every worker that takes it. After `max_deliveries`
deliveries its job goes to the dead-letter stream and the run fails, visibly; once the
cause is gone an operator queues it again and it completes."""

from __future__ import annotations

import uuid
from typing import Any

from redis.asyncio import Redis

from services.contract.runs import TERMINAL_STATUSES
from services.devstack.demo_llm import Reply
from testbed.streams import entries
from testbed.waiting import eventually
from tests.chaos.conftest import TUNING
from tests.chaos.invariants import assert_invariants
from tests.support.chaos_load import Integration
from tests.support.chaos_stack import ChaosStack

# Enough for the job to be delivered past `max_deliveries`, with one to spare; bounded,
# because each kill costs a worker restart.
MAX_KILLS = TUNING.max_deliveries + 2
TERMINAL = {status.value for status in TERMINAL_STATUSES}


async def _deliveries(stack: ChaosStack, run_id: str) -> str:
    """How the run's jobs stand in Redis and how often it was re-published: the evidence
    when it is not dead-lettered."""
    redis = Redis.from_url(stack.redis_url)
    try:
        found = await entries(redis, stack.streams.runs)
        pending = await redis.xpending_range(
            stack.streams.runs, stack.streams.group, min="-", max="+", count=1000
        )
    finally:
        await redis.aclose()
    ids = {entry_id for entry_id, fields in found if fields[b"run_id"] == run_id.encode()}
    mine = [(p["message_id"], p["times_delivered"]) for p in pending if p["message_id"] in ids]
    republished = await stack.db.fetchval(
        "SELECT count(*) FROM audit_events WHERE target = $1 AND action = 'run.republished'",
        f"run:{run_id}",
    )
    claims = await stack.db.fetchval("SELECT epoch FROM runs WHERE id = $1", uuid.UUID(run_id))
    return (
        f"claimed {claims} times, re-published by the sweeper {republished} times; "
        f"its pending entries (id, deliveries): {mine}"
    )


async def test_a_run_that_kills_every_worker_is_dead_lettered_and_an_operator_requeues_it(
    chaos: ChaosStack,
) -> None:
    await chaos.steady()
    agent = await chaos.agent("poison")
    # Every attempt takes a while, so each claim is seen (and punished) before it ends.
    text = f"poison {uuid.uuid4().hex[:10]}"
    chaos.llm.script(text, Reply(content="survived", delay_seconds=2))
    client = Integration(chaos.url, chaos.admin_key)
    try:
        poison = await client.start_run(agent, text)
        assert poison is not None
        kills = 0

        async def killing() -> dict[str, Any]:
            """Kill whichever worker claimed the poison run, up to MAX_KILLS times."""
            nonlocal kills
            holder = await chaos.holder(poison)
            if holder is not None and kills < MAX_KILLS:
                kills += 1
                await holder.kill()
                holder.restart_later()
            run: dict[str, Any] = (await chaos.api.get(f"/v1/runs/{poison}")).json()
            return run

        # Once the kills stop, the run either was dead-lettered or simply completes.
        run = await eventually(killing, lambda r: r["status"] in TERMINAL, within=60)
        if not run["dead_lettered_at"]:
            evidence = await _deliveries(chaos, poison)
            raise AssertionError(
                f"{run['status']}, not dead-lettered, after {kills} kills of the worker "
                f"holding it: {evidence}"
            )
        assert run["status"] == "failed"
        assert "delivered" in run["error"]
        queue = (await chaos.api.get("/v1/queue")).json()
        assert queue["dead_letter"] >= 1
        assert kills >= TUNING.max_deliveries

        await chaos.restarted()
        requeued = await chaos.api.post(f"/v1/runs/{poison}/requeue")
        assert requeued.status_code == 200, requeued.text
        assert requeued.json()["status"] == "queued"
        await assert_invariants(chaos, client.accepted, [agent])
    finally:
        await client.aclose()
    run = (await chaos.api.get(f"/v1/runs/{poison}")).json()
    assert (run["status"], run["dead_lettered_at"]) == ("completed", None)
    queue = (await chaos.api.get("/v1/queue")).json()
    assert queue["dead_letter"] == 0, "a requeued run's job leaves the dead-letter stream"
