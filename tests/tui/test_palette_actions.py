"""The command palette offers the screen's own actions, not only navigation."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import asyncpg

from services.client import AsyncFerrumDeck
from services.contract.runs import RunStatus
from tests.support.harness import ToolHarness
from tests.tui.conftest import until
from tests.tui.test_deck import static
from tui.app import FerrumDeckApp
from tui.screens.modals import ConfirmScreen

Deck = Callable[..., FerrumDeckApp]


async def test_palette_verifies_the_chain_and_requeues_a_dead_lettered_run(
    deck: Deck, harness: ToolHarness, db: asyncpg.Pool
) -> None:
    run_id = await harness.run()
    await db.execute(
        "UPDATE runs SET status = 'failed', dead_lettered_at = now() WHERE id = $1",
        uuid.UUID(run_id),
    )
    app = deck()
    async with app.run_test(size=(140, 40)) as pilot:
        await until(pilot, lambda: app.connection == "live")
        await pilot.press("5", "ctrl+p", *"Verify the audit", "enter")
        await until(pilot, lambda: "chain intact" in static(app, "#verify-result"), within=20)

        app.open_run(run_id)
        await until(pilot, lambda: "failed" in static(app, "#run-summary"))
        await pilot.press("ctrl+p", *"Requeue this run", "enter")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.press("y")
        await until(pilot, lambda: "queued" in static(app, "#run-summary"))
    async with AsyncFerrumDeck(app.client.url, harness.admin["Authorization"][7:]) as api:
        assert (await api.run(run_id)).status is RunStatus.QUEUED
