"""An approval the gateway refuses under separation of duties is explained in the deck,
and the call stays pending for someone else."""

from __future__ import annotations

from textual.coordinate import Coordinate
from textual.widgets import DataTable

from tests.support.harness import ToolHarness
from tests.tui.conftest import notifications, until
from tests.tui.test_deck import SIZE, Deck


async def test_approving_ones_own_run_is_refused_with_the_reason(
    deck: Deck, harness: ToolHarness
) -> None:
    response = await harness.client.put(
        "/v1/policies",
        json={
            "rules": [{"id": "ask-notes", "tool": "notes.*", "effect": "require_approval"}],
            "approvals": {"distinct_approver": "key"},
        },
        headers=harness.admin,
    )
    assert response.status_code == 200
    run_id, epoch = await harness.running(tools=["notes.*"])  # started by the deck's key
    _, verdict = await harness.authorize(run_id, epoch, 1, "notes.write_note", {"text": "mine"})
    approval = str(verdict["approval_id"])
    app = deck()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("4")
        table = app.screen.query_one("#approvals", DataTable)

        def shown() -> list[str]:
            return [
                str(table.coordinate_to_cell_key(Coordinate(i, 0)).row_key.value)
                for i in range(table.row_count)
            ]

        await until(pilot, lambda: approval in shown())
        table.move_cursor(row=shown().index(approval))
        await pilot.press("a", *"my own", "enter")
        await until(
            pilot,
            lambda: any(
                n.startswith("separation of duties: this key started the run")
                for n in notifications(app)
            ),
        )
        assert app.is_running
    (pending,) = await harness.approvals(run_id=run_id)
    assert pending["status"] == "pending"
