"""A worker shutting down hands its runs back: each is queued again at once with a fresh
job, another worker continues it from its recorded steps, and the first one is fenced."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg
from redis.asyncio import Redis

from services.contract.jobs import JobMessage, JobReason
from services.gateway.settings import GatewaySettings
from testbed.waiting import eventually
from tests.support.harness import ToolHarness


async def _release(h: ToolHarness, run_id: str, epoch: int, **fields: Any) -> tuple[int, Any]:
    return await h.call(run_id, "release", {"epoch": epoch, **fields})


async def _jobs(redis: Redis, settings: GatewaySettings, run_id: str) -> list[JobReason]:
    entries = await redis.xrange(settings.streams.runs)
    jobs = [JobMessage.from_fields(fields) for _, fields in entries]
    return [job.reason for job in jobs if str(job.run_id) == run_id]


async def test_a_released_run_is_continued_at_once_by_another_worker(
    h: ToolHarness, db: asyncpg.Pool, redis: Redis, settings: GatewaySettings
) -> None:
    run_id, epoch = await h.running()
    assert (await h.step(run_id, epoch, 1))[0] == 200
    status, _ = await _release(h, run_id, epoch, reason="SIGTERM: draining")
    assert status == 204

    run = await h.get(run_id)
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
        await h.client.get(f"/v1/audit?target=run:{run_id}&action=run.released", headers=h.admin)
    ).get_json()
    (event,) = events["items"]
    assert (event["actor"], event["details"]) == (
        "w1",
        {"epoch": epoch, "reason": "SIGTERM: draining"},
    )

    status, body = await h.step(run_id, epoch, 2)
    assert (status, body["error"]["code"]) == (409, "run_not_running")
    status, grant = await h.claim(run_id, "w2")
    assert status == 200
    assert grant["epoch"] == epoch + 1
    assert [s["seq"] for s in grant["steps"]] == [1]
    status, body = await h.call(run_id, "complete", {"epoch": epoch, "output": "late"})
    assert (status, body["error"]["code"]) == (409, "stale_epoch")
    assert (await h.call(run_id, "complete", {"epoch": epoch + 1, "output": "done"}))[0] == 204
    assert (await h.get(run_id))["status"] == "completed"


async def test_the_default_reason_is_a_shutdown(h: ToolHarness) -> None:
    run_id, epoch = await h.running()
    assert (await _release(h, run_id, epoch))[0] == 204
    events = await (
        await h.client.get(f"/v1/audit?target=run:{run_id}&action=run.released", headers=h.admin)
    ).get_json()
    assert events["items"][0]["details"]["reason"] == "worker shutting down"


async def test_only_the_current_holder_can_release_a_run(h: ToolHarness) -> None:
    run_id, epoch = await h.running()
    status, body = await _release(h, run_id, epoch + 1)
    assert (status, body["error"]["code"]) == (409, "stale_epoch")
    assert (await _release(h, run_id, epoch))[0] == 204
    status, body = await _release(h, run_id, epoch)
    assert (status, body["error"]["code"]) == (409, "run_not_running")

    finished, epoch = await h.running()
    await h.call(finished, "complete", {"epoch": epoch, "output": "done"})
    status, body = await _release(h, finished, epoch)
    assert (status, body["error"]["code"]) == (409, "run_not_running")
    assert (await h.get(finished))["status"] == "completed"
    assert (await _release(h, str(uuid.uuid4()), 1))[0] == 404

    refused = await h.client.post(
        f"/v1/worker/runs/{run_id}/release", json={"epoch": epoch}, headers=h.admin
    )
    assert refused.status_code == 401
