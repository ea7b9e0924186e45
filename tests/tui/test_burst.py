"""The deck through a burst of runs: it keeps its API connection, and what it shows stays
true, while hundreds of runs are created and change under it."""

from __future__ import annotations

import asyncio

import httpx
from textual.widgets import Select

from services.client import AsyncFerrumDeck
from services.contract.runs import RunStatus
from tests.support.gateway_server import ServedGateway
from tests.support.harness import ToolHarness
from tests.tui.conftest import notifications, until
from tests.tui.test_deck import (
    SIZE,
    Deck,
    approval_of,
    parked_call,
    row_keys,
    runs_list,
    static,
    table,
)
from tui.app import FerrumDeckApp

BURST = 400


async def burst(harness: ToolHarness, agent: str, runs: int, *, at_once: int = 25) -> list[str]:
    """`runs` runs of `agent`, `at_once` requests in flight at a time."""

    async def create(n: int) -> str:
        response = await harness.client.post(
            "/v1/runs", json={"agent": agent, "input": f"burst {n}"}, headers=harness.admin
        )
        assert response.status_code == 202, await response.get_json()
        return str((await response.get_json())["id"])

    created: list[str] = []
    for start in range(0, runs, at_once):
        batch = range(start, min(runs, start + at_once))
        created += await asyncio.gather(*(create(n) for n in batch))
    return created


async def test_after_a_burst_the_deck_still_decides_a_call(
    served: ServedGateway, admin_key: str, harness: ToolHarness
) -> None:
    """A few pool slots stand for the default hundred, so that this burst contends for
    them as a burst of thousands does."""
    await harness.policy({"id": "ask-notes", "tool": "notes.*", "effect": "require_approval"})
    agent = await harness.agent(tools=["notes.*"])
    transport = httpx.AsyncHTTPTransport(limits=httpx.Limits(max_connections=4))
    app = FerrumDeckApp(AsyncFerrumDeck(served.url, admin_key, transport=transport))
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.connection == "live")
        await pilot.press("2")
        await asyncio.gather(
            burst(harness, agent, BURST),
            *(parked_call(harness, agent, f"during the burst {n}") for n in range(40)),
        )
        run_id = await parked_call(harness, agent, "after the burst")
        approval = await approval_of(harness, run_id)
        await pilot.press("4")
        await until(pilot, lambda: approval in row_keys(app, "#approvals"), within=30)
        table(app, "#approvals").move_cursor(row=row_keys(app, "#approvals").index(approval))
        await pilot.press("a", *"checked after the burst", "enter")
        await until(pilot, lambda: approval not in row_keys(app, "#approvals"), within=30)
        assert not [n for n in notifications(app) if "unreachable" in n], notifications(app)
        assert app.connection == "live"
    (decided,) = await harness.approvals(run_id=run_id)
    assert decided["status"] == "approved"


async def test_a_status_filter_never_shows_another_status_during_a_burst(
    deck: Deck, harness: ToolHarness
) -> None:
    agent = await harness.agent()
    app = deck()
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.connection == "live")
        await pilot.press("2")
        first = await burst(harness, agent, BURST // 2)
        cancelled = first[::2]
        wrong: set[str] = set()

        def watch() -> None:
            runs = runs_list(app)
            wrong.update(
                status
                for key in runs.run_ids()
                if (status := runs.cell(key, "status")) != RunStatus.CANCELLED
            )

        app.screen.query_one("#status", Select).value = RunStatus.CANCELLED.value
        await pilot.pause()
        watcher = app.set_interval(0.02, watch)
        for run_id in cancelled:
            response = await harness.client.post(f"/v1/runs/{run_id}/cancel", headers=harness.admin)
            assert response.status_code == 200
        await burst(harness, agent, BURST // 2)
        await until(pilot, lambda: set(cancelled) <= set(row_keys(app, "#runs")), within=30)
        watcher.stop()
        watch()
        assert not wrong, f"rows of another status shown: {wrong}"
        mine = [key for key in row_keys(app, "#runs") if key in set(cancelled)]
        assert mine == sorted(mine, reverse=True), "newest first"


async def test_live_means_the_api_answers_too(served: ServedGateway, admin_key: str) -> None:
    """One pool slot, held by the feed: the feed is up, and every other call fails."""
    transport = httpx.AsyncHTTPTransport(limits=httpx.Limits(max_connections=1))
    app = FerrumDeckApp(AsyncFerrumDeck(served.url, admin_key, transport=transport, timeout=0.3))
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.connection == "api-down")
        assert "API unreachable" in static(app, "#nav-connection")
        assert any(n.endswith(": PoolTimeout") for n in notifications(app)), notifications(app)
