"""A worker shutting down hands its runs back: each is queued again at once with a fresh
job, another worker continues it from its recorded steps, and the first one is fenced."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg
from redis.asyncio import Redis

from services.contract.jobs import JobMessage, JobReason
from services.gateway.settings import GatewaySettings
from testbed.streams import entries
from testbed.waiting import eventually
from tests.support.harness import ToolHarness


async def _release(harness: ToolHarness, run_id: str, epoch: int, **fields: Any) -> tuple[int, Any]:
    return await harness.call(run_id, "release", {"epoch": epoch, **fields})


async def _jobs(redis: Redis, settings: GatewaySettings, run_id: str) -> list[JobReason]:
    found = await entries(redis, settings.streams.runs)
    jobs = [JobMessage.from_fields(fields) for _, fields in found]
    return [job.reason for job in jobs if str(job.run_id) == run_id]


async def test_a_released_run_is_continued_at_once_by_another_worker(
    harness: ToolHarness, db: asyncpg.Pool, redis: Redis, settings: GatewaySettings
) -> None:
    run_id, epoch = await harness.running()
    assert (await harness.step(run_id, epoch, 1))[0] == 200
    key_id = await db.fetchval("SELECT lease_key FROM runs WHERE id = $1", uuid.UUID(run_id))
    status, _ = await _release(harness, run_id, epoch, reason="SIGTERM: draining")
    assert status == 204

    run = await harness.get(run_id)
    assert (run["status"], run["steps_count"], run["finished_at"]) == ("queued", 1, None)
    lease = await db.fetchrow(
        "SELECT lease_owner, lease_expires_at FROM runs WHERE id = $1", uuid.UUID(run_id)
    )
    assert tuple(lease) == (None, None)
    await eventually(
        lambda: _jobs(redis, settings, run_id),
        lambda reasons: reasons == [JobReason.CREATED, JobReason.REQUEUED],
    )
    events = await (
        await harness.client.get(
            f"/v1/audit?target=run:{run_id}&action=run.released", headers=harness.admin
        )
    ).get_json()
    (event,) = events["items"]
    # The key the worker authenticated with, beside the name it gave itself.
    assert (event["actor"], event["details"]) == (
        f"w1 ({key_id})",
        {"epoch": epoch, "reason": "SIGTERM: draining"},
    )

    status, body = await harness.step(run_id, epoch, 2)
    assert (status, body["error"]["code"]) == (409, "run_not_running")
    status, grant = await harness.claim(run_id, "w2")
    assert status == 200
    assert grant["epoch"] == epoch + 1
    assert [s["seq"] for s in grant["steps"]] == [1]
    status, body = await harness.call(run_id, "complete", {"epoch": epoch, "output": "late"})
    assert (status, body["error"]["code"]) == (409, "stale_epoch")
    assert (await harness.call(run_id, "complete", {"epoch": epoch + 1, "output": "done"}))[
        0
    ] == 204
    assert (await harness.get(run_id))["status"] == "completed"


async def test_the_default_reason_is_a_shutdown(harness: ToolHarness) -> None:
    run_id, epoch = await harness.running()
    assert (await _release(harness, run_id, epoch))[0] == 204
    events = await (
        await harness.client.get(
            f"/v1/audit?target=run:{run_id}&action=run.released", headers=harness.admin
        )
    ).get_json()
    assert events["items"][0]["details"]["reason"] == "worker shutting down"


async def test_only_the_current_holder_can_release_a_run(harness: ToolHarness) -> None:
    run_id, epoch = await harness.running()
    status, body = await _release(harness, run_id, epoch + 1)
    assert (status, body["error"]["code"]) == (409, "stale_epoch")
    assert (await _release(harness, run_id, epoch))[0] == 204
    status, body = await _release(harness, run_id, epoch)
    assert (status, body["error"]["code"]) == (409, "run_not_running")

    finished, epoch = await harness.running()
    await harness.call(finished, "complete", {"epoch": epoch, "output": "done"})
    status, body = await _release(harness, finished, epoch)
    assert (status, body["error"]["code"]) == (409, "run_not_running")
    assert (await harness.get(finished))["status"] == "completed"
    assert (await _release(harness, str(uuid.uuid4()), 1, lease_token="t" * 43))[0] == 404

    refused = await harness.client.post(
        f"/v1/worker/runs/{run_id}/release", json={"epoch": epoch}, headers=harness.admin
    )
    assert refused.status_code == 401
