"""Driving the chaos stack: load running while a fault happens, and faults aimed at a
run in a given state."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from testbed.waiting import eventually
from tests.support.chaos_load import Integration, keep_starting
from tests.support.chaos_stack import ChaosStack, Slot


@contextlib.asynccontextmanager
async def under_load(
    stack: ChaosStack, agent: str, make: Callable[[], str], *, clients: int = 3
) -> AsyncIterator[Integration]:
    """Integrations starting runs for the whole block; they stop (and finish the request
    each is retrying) when it ends."""
    integration = Integration(stack.url, stack.admin_key)
    stop = asyncio.Event()
    load = asyncio.create_task(keep_starting(integration, agent, make, stop, clients=clients))
    try:
        yield integration
    except BaseException:
        load.cancel()
        raise
    finally:
        stop.set()
        with contextlib.suppress(asyncio.CancelledError):
            await load
        await integration.aclose()


async def accepted_more(integration: Integration, runs: int, within: float = 30) -> None:
    """Wait until `runs` more runs than now have been accepted: the gateway serves."""
    target = len(integration.accepted) + runs

    async def count() -> int:
        return len(integration.accepted)

    await eventually(count, lambda n: n >= target, within=within)


async def steps(stack: ChaosStack, run_id: str) -> list[dict[str, Any]]:
    """The run's steps as recorded, straight from PostgreSQL (the gateway may be away)."""
    rows = await stack.db.fetch(
        "SELECT seq, kind, status, tool, epoch FROM steps WHERE run_id = $1 ORDER BY seq",
        uuid.UUID(run_id),
    )
    return [dict(row) for row in rows]


async def kill_holder_when(
    stack: ChaosStack, run_id: str, condition: Callable[[], Awaitable[bool]], within: float = 30
) -> Slot:
    """SIGKILL the worker holding `run_id` as soon as `condition` holds, and start its
    next process in the background, as a service manager would. An earlier kill's restart
    is waited for first, so there is always a worker to take the run over."""
    await stack.restarted()

    async def armed() -> Slot | None:
        return await stack.holder(run_id) if await condition() else None

    holder = await eventually(armed, lambda slot: slot is not None, within=within)
    assert holder is not None
    await holder.kill()
    holder.restart_later()
    return holder


async def decide_pending_approval(stack: ChaosStack, run_id: str, verb: str, reason: str) -> None:
    """Play the human: approve or reject the one approval the run waits for."""

    async def pending() -> list[dict[str, Any]]:
        response = await stack.api.get(f"/v1/approvals?run_id={run_id}&status=pending")
        items: list[dict[str, Any]] = response.json()["items"]
        return items

    (approval,) = await eventually(pending, lambda items: len(items) == 1, within=30)
    decided = await stack.api.post(
        f"/v1/approvals/{approval['id']}/{verb}", json={"reason": reason}
    )
    assert decided.status_code == 200, decided.text
