"""The dashboard's figures say their window, and dead letters and refusals are among them."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable

import asyncpg

from tests.support.harness import ToolHarness
from tests.tui.conftest import until
from tests.tui.test_deck import static
from tui.app import FerrumDeckApp

Deck = Callable[..., FerrumDeckApp]


async def test_dead_letters_of_the_window_are_on_the_dashboard(
    deck: Deck, harness: ToolHarness, db: asyncpg.Pool
) -> None:
    run_id = await harness.run()
    await db.execute(
        "UPDATE runs SET status = 'failed', dead_lettered_at = now() WHERE id = $1",
        uuid.UUID(run_id),
    )
    app = deck()
    async with app.run_test(size=(140, 40)) as pilot:
        await until(pilot, lambda: "dead-lettered" in static(app, "#run-numbers"))
        found = re.search(r"dead-lettered (\d+)", static(app, "#run-numbers"))
        assert found is not None
        assert int(found.group(1)) >= 1
        assert "requeue" in static(app, "#run-numbers")
        refused = re.search(
            r"refused \(429\) (\d+) in the last (\d+) min", static(app, "#run-numbers")
        )
        assert refused is not None  # counted by the gateway: tests/integration/test_backpressure
        assert int(refused.group(2)) in (15, 16)
        await until(pilot, lambda: "now: waiting" in static(app, "#queue-numbers"))


async def test_runs_waiting_for_their_thread_are_counted_open_on_the_dashboard(
    deck: Deck, harness: ToolHarness
) -> None:
    agent = await harness.agent()
    made = await harness.client.post("/v1/threads", json={}, headers=harness.admin)
    thread = (await made.get_json())["id"]
    for turn in ("first", "second", "third"):
        body = {"agent": agent, "input": turn, "thread_id": thread, "if_busy": "enqueue"}
        sent = await harness.client.post("/v1/runs", json=body, headers=harness.admin)
        assert sent.status_code == 202
    app = deck()
    async with app.run_test(size=(140, 40)) as pilot:
        await until(pilot, lambda: "waiting_thread" in static(app, "#run-numbers"))
        found = re.search(r"waiting_thread\s(\d+)", static(app, "#run-numbers"))
        assert found is not None
        assert int(found.group(1)) >= 2
