"""Callback slots shared out project by project: a flood's queue is no queue for others."""

from __future__ import annotations

import asyncio
import contextvars

from services.worker.fair_slots import FairSlots, serving


async def _hold(slots: FairSlots, project: str, name: str, served: list[str], claim: bool) -> None:
    serving.set(project)
    async with slots.held(claim=claim):
        served.append(name)
        await asyncio.sleep(0)


def _start(
    slots: FairSlots, project: str, name: str, served: list[str], *, claim: bool = False
) -> asyncio.Task[None]:
    return asyncio.create_task(
        _hold(slots, project, name, served, claim), context=contextvars.Context()
    )


async def _blocked(slots: FairSlots, gate: asyncio.Event) -> asyncio.Task[None]:
    """A task holding one slot until `gate` is set."""

    async def hold() -> None:
        async with slots.held():
            await gate.wait()

    task = asyncio.create_task(hold())
    await _settle()
    return task


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_a_freed_slot_goes_to_the_next_project_not_the_oldest_waiter() -> None:
    slots = FairSlots(1)
    served: list[str] = []
    gate = asyncio.Event()

    async def blocker() -> None:
        serving.set("a")
        async with slots.held():
            await gate.wait()

    blocking = asyncio.create_task(blocker(), context=contextvars.Context())
    await _settle()
    flood = [_start(slots, "a", f"a{n}", served) for n in range(5)]
    await _settle()
    quiet = _start(slots, "b", "b0", served)
    await _settle()
    gate.set()
    await asyncio.gather(blocking, *flood, quiet)
    assert served == ["a0", "b0", "a1", "a2", "a3", "a4"]


async def test_a_project_finishes_the_runs_it_has_before_claiming_more() -> None:
    """A claim waits behind its own project's runs already going, never another's."""
    slots = FairSlots(1)
    served: list[str] = []
    gate = asyncio.Event()
    blocking = await _blocked(slots, gate)
    claims = [_start(slots, "a", f"claim{n}", served, claim=True) for n in range(3)]
    await _settle()
    reports = [_start(slots, "a", f"report{n}", served) for n in range(2)]
    quiet_claim = _start(slots, "b", "quiet-claim", served, claim=True)
    await _settle()
    gate.set()
    await asyncio.gather(blocking, *claims, *reports, quiet_claim)
    assert served == ["report0", "quiet-claim", "report1", "claim0", "claim1", "claim2"]


async def test_one_project_alone_is_served_first_come_first_served() -> None:
    slots = FairSlots(2)
    served: list[str] = []
    tasks = [_start(slots, "a", f"a{n}", served) for n in range(8)]
    await asyncio.gather(*tasks)
    assert served == [f"a{n}" for n in range(8)]


async def test_a_wait_cancelled_loses_no_slot() -> None:
    slots = FairSlots(2)
    served: list[str] = []
    gate = asyncio.Event()

    async def blocker() -> None:
        async with slots.held():
            await gate.wait()

    blockers = [asyncio.create_task(blocker()) for _ in range(2)]
    await _settle()
    given_up = [_start(slots, "a", f"gone{n}", served) for n in range(3)]
    await _settle()
    for task in given_up:
        task.cancel()
    gate.set()
    await asyncio.gather(*blockers)
    await asyncio.gather(*given_up, return_exceptions=True)
    # Both slots are free again: two holders at once, neither waiting.
    inside = 0
    peak = 0

    async def count() -> None:
        nonlocal inside, peak
        async with slots.held():
            inside += 1
            peak = max(peak, inside)
            await asyncio.sleep(0.01)
            inside -= 1

    await asyncio.wait_for(asyncio.gather(count(), count(), count()), 1)
    assert peak == 2
    assert served == []


async def test_a_slot_handed_over_as_its_wait_is_cancelled_is_passed_on() -> None:
    slots = FairSlots(1)
    served: list[str] = []
    gate = asyncio.Event()
    tasks: dict[str, asyncio.Task[None]] = {}

    async def blocker() -> None:
        async with slots.held():
            await gate.wait()
        # The slot was just handed to `unlucky`, which has not run yet.
        tasks["unlucky"].cancel()

    blocking = asyncio.create_task(blocker())
    await _settle()
    tasks["unlucky"] = _start(slots, "a", "unlucky", served)
    after = _start(slots, "b", "after", served)
    await _settle()
    gate.set()
    await blocking
    await asyncio.wait_for(after, 1)
    assert served == ["after"]
