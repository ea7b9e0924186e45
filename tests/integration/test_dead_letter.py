"""Poison jobs: a run whose job was delivered too often without finishing is failed with
the reason, shows in the queue's dead-letter depth, and an operator can queue it again."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from services.client import AsyncFerrumDeck, Conflict
from services.contract.jobs import DeadLetter, JobMessage, JobReason, StreamNames
from services.gateway.settings import GatewaySettings
from testbed.streams import append, entries
from testbed.waiting import eventually
from tests.support.gateway_server import ServedGateway, serve_gateway
from tests.support.harness import ToolHarness

DeadLetterCall = Callable[..., Awaitable[tuple[int, Any]]]


async def _poison(redis: Redis, streams: StreamNames, run_id: str) -> str:
    """Make the run's latest job look taken by workers that died while running it, one
    time more than `max_deliveries` (5): what a worker asking to dead-letter it has seen."""

    async def jobs() -> list[bytes]:
        found = await entries(redis, streams.runs)
        return [entry_id for entry_id, f in found if f.get(b"run_id") == run_id.encode()]

    *_, entry_id = await eventually(jobs, bool)
    with contextlib.suppress(ResponseError):  # the group exists already
        await redis.xgroup_create(streams.runs, streams.group, id="0", mkstream=True)
    await redis.xreadgroup(streams.group, "ghost", {streams.runs: ">"})
    await redis.xclaim(streams.runs, streams.group, "ghost", 0, [entry_id], retrycount=6)
    return entry_id.decode()


@pytest.fixture
def dead_letter(harness: ToolHarness, redis: Redis, settings: GatewaySettings) -> DeadLetterCall:
    """Ask to dead-letter a run as a worker does, with its poisoned job as evidence
    (`entry_id` given: that entry instead, as it is)."""

    async def ask(
        run_id: str, *, reason: str = "worker crashed", entry_id: str | None = None
    ) -> tuple[int, Any]:
        if entry_id is None:
            entry_id = await _poison(redis, settings.streams, run_id)
        return await harness.call(
            run_id,
            "dead-letter",
            {"entry_id": entry_id, "worker_id": "w-dlq", "deliveries": 6, "reason": reason},
        )

    return ask


async def _expire_lease(db: asyncpg.Pool, run_id: str) -> None:
    await db.execute(
        "UPDATE runs SET lease_expires_at = now() - interval '1 second' WHERE id = $1",
        uuid.UUID(run_id),
    )


async def _set_aside(redis: Redis, settings: GatewaySettings, run_id: str) -> None:
    """What a worker writes to the dead-letter stream once the gateway agreed."""
    entry = DeadLetter(
        run_id=uuid.UUID(run_id),
        reason="worker crashed",
        deliveries=5,
        source_id="1-1",
        worker_id="w-dlq",
        fields=json.dumps({"run_id": run_id, "reason": "created"}),
    )
    await append(redis, settings.streams.dead_letter, entry.to_fields())


async def _listed(harness: ToolHarness, query: str) -> list[str]:
    response = await harness.client.get(f"/v1/runs?{query}", headers=harness.admin)
    assert response.status_code == 200, await response.get_json()
    return [run["id"] for run in (await response.get_json())["items"]]


async def _audit(harness: ToolHarness, run_id: str, action: str) -> list[dict[str, Any]]:
    response = await harness.client.get(
        f"/v1/audit?target=run:{run_id}&action={action}", headers=harness.admin
    )
    items: list[dict[str, Any]] = (await response.get_json())["items"]
    return items


async def _dead_letter_depth(harness: ToolHarness) -> int:
    return int(
        (await (await harness.client.get("/v1/queue", headers=harness.admin)).get_json())[
            "dead_letter"
        ]
    )


async def test_a_job_delivered_too_often_fails_its_run_with_the_reason(
    dead_letter: DeadLetterCall,
    harness: ToolHarness,
) -> None:
    run_id = await harness.run()
    other = await harness.run()
    status, _ = await dead_letter(run_id, reason="worker crashed")
    assert status == 204
    run = await harness.get(run_id)
    assert run["status"] == "failed"
    assert run["error"] == (
        "dead-lettered: its job was delivered 6 times without finishing (worker crashed)"
    )
    assert run["dead_lettered_at"] is not None
    assert run["finished_at"] is not None
    (event,) = await _audit(harness, run_id, "run.dead_lettered")
    assert event["actor"].startswith("w-dlq (")
    assert event["details"] == {
        "deliveries": 6,
        "entry_id": event["details"]["entry_id"],
        "reason": "worker crashed",
        "worker": "w-dlq",
    }

    dead = await _listed(harness, "dead_lettered=true")
    assert run_id in dead
    assert other not in dead
    assert run_id in await _listed(harness, "dead_lettered=true&status=failed")
    alive = await _listed(harness, "dead_lettered=false")
    assert other in alive
    assert run_id not in alive
    assert (await harness.get(other))["dead_lettered_at"] is None


async def test_a_worker_key_cannot_fail_a_healthy_run_by_calling_its_job_poison(
    dead_letter: DeadLetterCall, harness: ToolHarness, redis: Redis, settings: GatewaySettings
) -> None:
    """A worker's word is not evidence: the stream must show the run's own job pending
    and delivered more than `max_deliveries` times."""
    healthy = await harness.run()
    poisoned = await harness.run()

    async def jobs() -> dict[bytes, str]:
        found = await entries(redis, settings.streams.runs)
        return {f[b"run_id"]: entry_id.decode() for entry_id, f in found}

    published = await eventually(jobs, lambda found: healthy.encode() in found)
    fresh = published[healthy.encode()]
    others = await dead_letter(poisoned)
    assert others[0] == 204
    poisoned_entry = (await _audit(harness, poisoned, "run.dead_lettered"))[0]["details"]
    for entry_id in (fresh, poisoned_entry["entry_id"], "1-1"):
        status, body = await dead_letter(healthy, entry_id=entry_id)
        assert (status, body["error"]["code"]) == (409, "deliveries_unproven"), entry_id
    assert (await harness.get(healthy))["status"] == "queued"


async def test_a_run_whose_worker_died_can_be_dead_lettered_but_not_one_being_worked_on(
    dead_letter: DeadLetterCall, harness: ToolHarness, db: asyncpg.Pool
) -> None:
    run_id, epoch = await harness.running()
    status, body = await dead_letter(run_id)
    assert (status, body["error"]["code"]) == (409, "lease_held")
    assert (await harness.get(run_id))["status"] == "running"

    await _expire_lease(db, run_id)
    assert (await dead_letter(run_id))[0] == 204
    assert (await harness.get(run_id))["status"] == "failed"
    late: list[tuple[str, dict[str, Any]]] = [
        ("heartbeat", {"epoch": epoch}),
        ("complete", {"epoch": epoch, "output": "too late"}),
    ]
    for action, report in late:
        status, refused = await harness.call(run_id, action, report)
        assert (status, refused["error"]["code"]) == (409, "run_not_running"), action


async def test_parked_finished_and_unknown_runs_are_not_dead_lettered(
    dead_letter: DeadLetterCall, harness: ToolHarness
) -> None:
    await harness.policy({"id": "ask", "tool": "notes.*", "effect": "require_approval"})
    parked, epoch = await harness.running(tools=["notes.*"])
    assert (await harness.authorize(parked, epoch, 1, "notes.write_note"))[0] == 200
    finished, epoch = await harness.running()
    assert (await harness.call(finished, "complete", {"epoch": epoch, "output": "done"}))[0] == 204
    cancelled = await harness.run()
    await harness.client.post(f"/v1/runs/{cancelled}/cancel", headers=harness.admin)

    for run_id, was in [
        (parked, "waiting_approval"),
        (finished, "completed"),
        (cancelled, "cancelled"),
    ]:
        status, body = await dead_letter(run_id)
        assert (status, body["error"]["code"]) == (409, "run_not_claimable"), was
        assert (await harness.get(run_id))["status"] == was
    assert (await dead_letter(str(uuid.uuid4()), entry_id="1-1"))[0] == 404
    refused = await harness.client.post(
        f"/v1/worker/runs/{cancelled}/dead-letter",
        json={"entry_id": "1-1", "worker_id": "w", "deliveries": 6, "reason": "x"},
        headers=harness.admin,
    )
    assert refused.status_code == 401


async def test_an_operator_requeues_a_dead_lettered_run_and_it_resumes_where_it_stopped(
    dead_letter: DeadLetterCall,
    harness: ToolHarness,
    db: asyncpg.Pool,
    redis: Redis,
    settings: GatewaySettings,
) -> None:
    run_id, epoch = await harness.running()
    assert (await harness.step(run_id, epoch, 1))[0] == 200
    await _expire_lease(db, run_id)
    assert (await dead_letter(run_id))[0] == 204
    bystander = await harness.run()
    for dead in (run_id, run_id, bystander):
        await _set_aside(redis, settings, dead)
    assert await _dead_letter_depth(harness) == 3

    response = await harness.client.post(f"/v1/runs/{run_id}/requeue", headers=harness.admin)
    assert response.status_code == 200, await response.get_json()
    run = await response.get_json()
    assert (run["id"], run["status"], run["steps_count"]) == (run_id, "queued", 1)
    assert (run["error"], run["finished_at"], run["dead_lettered_at"]) == (None, None, None)
    assert run == await harness.get(run_id)
    (event,) = await _audit(harness, run_id, "run.requeued")
    assert event["actor"].startswith("test-admin (")
    assert run_id not in await _listed(harness, "dead_lettered=true")

    left = await entries(redis, settings.streams.dead_letter)
    assert [DeadLetter.from_fields(f).run_id for _, f in left] == [uuid.UUID(bystander)]
    assert await _dead_letter_depth(harness) == 1
    requeued = JobMessage(run_id=uuid.UUID(run_id), reason=JobReason.REQUEUED, project="default")
    await eventually(lambda: _jobs(redis, settings), lambda jobs: requeued in jobs)

    status, grant = await harness.claim(run_id, "w-after")
    assert status == 200
    assert grant["epoch"] == epoch + 1
    assert [s["seq"] for s in grant["steps"]] == [1]


async def _jobs(redis: Redis, settings: GatewaySettings) -> list[JobMessage]:
    return [JobMessage.from_fields(f) for _, f in await entries(redis, settings.streams.runs)]


async def test_only_dead_lettered_runs_can_be_requeued(
    dead_letter: DeadLetterCall, harness: ToolHarness
) -> None:
    queued = await harness.run()
    failed, epoch = await harness.running()
    assert (await harness.call(failed, "fail", {"epoch": epoch, "error": "model said no"}))[
        0
    ] == 204
    for run_id, was in [(queued, "queued"), (failed, "failed")]:
        response = await harness.client.post(f"/v1/runs/{run_id}/requeue", headers=harness.admin)
        assert response.status_code == 409
        body = await response.get_json()
        assert body["error"]["code"] == "not_dead_lettered"
        assert (await harness.get(run_id))["status"] == was
    missing = await harness.client.post(f"/v1/runs/{uuid.uuid4()}/requeue", headers=harness.admin)
    assert missing.status_code == 404

    dead = await harness.run()
    assert (await dead_letter(dead))[0] == 204
    first = await harness.client.post(f"/v1/runs/{dead}/requeue", headers=harness.admin)
    again = await harness.client.post(f"/v1/runs/{dead}/requeue", headers=harness.admin)
    assert (first.status_code, again.status_code) == (200, 409)


async def test_the_dead_letter_depth_is_a_metric(
    harness: ToolHarness, redis: Redis, settings: GatewaySettings
) -> None:
    assert await _dead_letter_depth(harness) == 0
    for _ in range(2):
        await _set_aside(redis, settings, str(uuid.uuid4()))
    scraped = await (await harness.client.get("/metrics")).get_data(as_text=True)
    assert "ferrumdeck_queue_dead_letter 2.0" in scraped.splitlines()


@pytest.fixture
async def served(settings: GatewaySettings) -> AsyncIterator[ServedGateway]:
    async with serve_gateway(settings) as gateway:
        yield gateway


async def _cli(
    served: ServedGateway, admin_key: str, cwd: Path, *args: str
) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "FERRUMDECK_URL": served.url,
        "FERRUMDECK_API_KEY": admin_key,
        "FERRUMDECK_ENV_FILE": "",
    }
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "services.cli.main", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def test_operators_find_and_requeue_dead_lettered_runs_from_client_and_cli(
    dead_letter: DeadLetterCall,
    served: ServedGateway,
    harness: ToolHarness,
    admin_key: str,
    tmp_path: Path,
) -> None:
    by_client, by_cli = await harness.run(), await harness.run()
    for run_id in (by_client, by_cli):
        assert (await dead_letter(run_id))[0] == 204

    async with AsyncFerrumDeck(served.url, admin_key) as deck:
        dead = [str(run.id) for run in (await deck.runs(dead_lettered=True, limit=200)).items]
        assert {by_client, by_cli} <= set(dead)
        assert (await deck.requeue_run(by_client)).status == "queued"
        with pytest.raises(Conflict) as refused:
            await deck.requeue_run(by_client)
        assert refused.value.code == "not_dead_lettered"

    listed = await _cli(served, admin_key, tmp_path, "runs", "list", "--dead-lettered", "--json")
    assert listed.returncode == 0, listed.stderr
    dead = [run["id"] for run in json.loads(listed.stdout)["items"]]
    assert by_cli in dead
    assert by_client not in dead
    requeued = await _cli(served, admin_key, tmp_path, "runs", "requeue", by_cli)
    assert requeued.returncode == 0, requeued.stderr
    assert requeued.stdout.strip() == f"run {by_cli} is queued again"
    again = await _cli(served, admin_key, tmp_path, "runs", "requeue", by_cli)
    assert again.returncode == 2
    (line,) = again.stderr.strip().splitlines()
    assert "409" in line
    assert "not_dead_lettered" in line
