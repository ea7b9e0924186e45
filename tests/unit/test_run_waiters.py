"""Waiters wake on their own run settling, on a lost-notifications resync, and not else."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

from prometheus_client import REGISTRY

from services.contract.api import Run
from services.contract.runs import RunStatus
from services.gateway.run_waiters import RunWaiters


def _run(run_id: uuid.UUID, status: RunStatus) -> Run:
    now = datetime.now(UTC)
    return Run.model_validate(
        {
            "id": run_id,
            "agent": "a",
            "agent_version": 1,
            "status": status,
            "input": "hi",
            "output": None,
            "error": None,
            "metadata": {},
            "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
            "steps_count": 0,
            "created_at": now,
            "started_at": None,
            "finished_at": None,
        }
    )


def _waiting() -> float:
    """The gauge an operator watches: requests held open until their run settles."""
    value = REGISTRY.get_sample_value("ferrumdeck_run_waiters")
    assert value is not None
    return value


class _Stored:
    """The run as the database has it, changed by the test."""

    def __init__(self, run_id: uuid.UUID) -> None:
        self.run = _run(run_id, RunStatus.RUNNING)
        self.reads = 0

    async def read(self) -> Run:
        self.reads += 1
        return self.run


async def test_a_waiter_wakes_when_its_run_settles_and_not_for_others() -> None:
    waiters, run_id = RunWaiters(), uuid.uuid4()
    stored = _Stored(run_id)
    before = _waiting()
    waiting = asyncio.create_task(waiters.until_settled(run_id, 30, stored.read))
    await asyncio.sleep(0.01)
    waiters.notice("run", {"run_id": str(uuid.uuid4()), "status": "completed"})
    waiters.notice("run", {"run_id": str(run_id), "status": "running"})
    waiters.notice("step", {"run_id": str(run_id), "status": "completed"})
    await asyncio.sleep(0.01)
    assert (stored.reads, _waiting() - before) == (1, 1)
    stored.run = _run(run_id, RunStatus.COMPLETED)
    waiters.notice("run", {"run_id": str(run_id), "status": "completed"})
    assert (await asyncio.wait_for(waiting, 5)).status == RunStatus.COMPLETED
    assert _waiting() == before


async def test_a_resync_makes_every_waiter_read_again() -> None:
    waiters, run_id = RunWaiters(), uuid.uuid4()
    stored = _Stored(run_id)
    waiting = asyncio.create_task(waiters.until_settled(run_id, 30, stored.read))
    await asyncio.sleep(0.01)
    stored.run = _run(run_id, RunStatus.WAITING_APPROVAL)
    waiters.notice("resync", {})
    assert (await asyncio.wait_for(waiting, 5)).status == RunStatus.WAITING_APPROVAL


async def test_a_change_during_the_read_is_not_missed() -> None:
    waiters, run_id = RunWaiters(), uuid.uuid4()
    stored = _Stored(run_id)

    async def read_while_it_finishes() -> Run:
        seen = await stored.read()
        if stored.reads == 1:
            stored.run = _run(run_id, RunStatus.FAILED)
            waiters.notice("run", {"run_id": str(run_id), "status": "failed"})
        return seen

    settled = await asyncio.wait_for(waiters.until_settled(run_id, 30, read_while_it_finishes), 5)
    assert (settled.status, stored.reads) == (RunStatus.FAILED, 2)


async def test_a_malformed_notification_wakes_no_one() -> None:
    waiters, run_id = RunWaiters(), uuid.uuid4()
    stored = _Stored(run_id)
    waiting = asyncio.create_task(waiters.until_settled(run_id, 0.3, stored.read))
    await asyncio.sleep(0.01)
    waiters.notice("run", {"run_id": "nope", "status": "completed"})
    waiters.notice("run", {"run_id": str(run_id), "status": "exploded"})
    waiters.notice("run", {})
    assert (await waiting).status == RunStatus.RUNNING
    assert stored.reads == 2
