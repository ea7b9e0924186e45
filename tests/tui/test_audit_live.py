"""The audit screen follows the platform: new events come on top while the cursor stays
on the event the operator reads, and a marker counts those above it."""

from __future__ import annotations

from collections.abc import Callable

from textual.coordinate import Coordinate
from textual.widgets import DataTable

from tests.support.harness import ToolHarness
from tests.tui.conftest import until
from tests.tui.test_deck import static
from tui.app import FerrumDeckApp

Deck = Callable[..., FerrumDeckApp]


async def test_new_events_arrive_on_top_and_are_counted_above_the_cursor(
    deck: Deck, harness: ToolHarness
) -> None:
    await harness.run()
    await harness.run()
    app = deck()
    async with app.run_test(size=(140, 40)) as pilot:
        await until(pilot, lambda: app.connection == "live")
        await pilot.press("5")
        table = app.screen.query_one("#audit", DataTable)
        await until(pilot, lambda: table.row_count >= 2)
        await pilot.press("j")
        reading = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        newest = max(int(str(k.value)) for k in table.rows)

        await harness.run()
        await until(pilot, lambda: "new events above" in static(app, "#verify-result"))
        assert int(str(table.get_cell_at(Coordinate(0, 0)))) > newest
        assert table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value == reading

        await pilot.press("g", "g")
        await until(pilot, lambda: "new events" not in static(app, "#verify-result"))
