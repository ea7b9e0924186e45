"""The keys an operator brings from k9s and lazygit, and a search that finds runs the deck
never loaded — against a real gateway."""

from __future__ import annotations

import uuid
from collections.abc import Callable

from textual.widgets import DataTable, Input, Select, Static

from tests.support.harness import ToolHarness
from tests.tui.conftest import text_of, until
from tests.tui.test_deck import parked_call, row_keys, runs_list, static
from tui.app import FerrumDeckApp
from tui.screens.help import HelpScreen

SIZE = (140, 40)
Deck = Callable[..., FerrumDeckApp]


async def _runs(harness: ToolHarness, agent: str, inputs: list[str]) -> list[str]:
    ids = []
    for text in inputs:
        response = await harness.client.post(
            "/v1/runs", json={"agent": agent, "input": text}, headers=harness.admin
        )
        ids.append(str((await response.get_json())["id"]))
    return ids


async def test_slash_enter_searches_every_runs_input_and_escape_clears_it(
    deck: Deck, harness: ToolHarness
) -> None:
    token = uuid.uuid4().hex[:10]
    agent = await harness.agent()
    wanted = await _runs(harness, agent, [f"refund {token} one", f"REFUND {token} two"])
    # Newer than the searched ones: the first page the deck loads is of these only.
    await _runs(harness, agent, [f"weather {token}"] * 3)
    app = deck()
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.connection == "live")
        await pilot.press("2")
        await until(pilot, lambda: runs_list(app).row_count > 0)
        await pilot.press("slash", *f"refund {token}", "enter")
        await until(pilot, lambda: row_keys(app, "#runs") == wanted[::-1])
        assert "2 found with" in static(app, "#runs-info")
        assert runs_list(app).has_focus

        await pilot.press("escape")  # on the list: every filter off, still on Runs
        assert app.current_mode == "runs"
        assert app.screen.query_one("#text", Input).value == ""
        await until(pilot, lambda: "found" not in static(app, "#runs-info"))
        await until(pilot, lambda: runs_list(app).row_count >= 5)

        await pilot.press("colon", *f"find two {token}", "enter")
        await until(pilot, lambda: row_keys(app, "#runs") == [])
        await pilot.press("colon", *f"find {token} two", "enter")
        await until(pilot, lambda: row_keys(app, "#runs") == [wanted[1]])

        await pilot.press("slash")
        await pilot.press("escape")  # in the filter: that filter off, focus back on the list
        await until(pilot, lambda: runs_list(app).row_count >= 5)
        assert runs_list(app).has_focus
        await pilot.press("escape")  # nothing left to clear: back, as everywhere
        assert app.current_mode == "dashboard"


async def test_escape_clears_status_and_agent_filters_and_focus_returns_to_the_list(
    deck: Deck, harness: ToolHarness
) -> None:
    agent = await harness.agent()
    ids = await _runs(harness, agent, ["a", "b"])
    app = deck()
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.connection == "live")
        await pilot.press("2", "a", *agent, "enter")
        await until(pilot, lambda: row_keys(app, "#runs") == ids[::-1])
        await pilot.press("s")
        assert app.screen.query_one("#status", Select).has_focus
        await pilot.press("1", "2")
        assert runs_list(app).has_focus, "back on a screen, keys go to its list"
        await pilot.press("escape")
        assert app.screen.query_one("#agent", Input).value == ""
        await until(pilot, lambda: len(row_keys(app, "#runs")) > 2)


async def test_j_k_G_gg_move_in_every_list(deck: Deck, harness: ToolHarness) -> None:
    await harness.policy({"id": "ask-notes", "tool": "notes.*", "effect": "require_approval"})
    agent = await harness.agent(tools=["notes.*"])
    for n in range(3):
        await parked_call(harness, agent, f"keys {n}")
    await _runs(harness, agent, ["x"] * 3)
    app = deck()
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.connection == "live")
        await pilot.press("2", "a", *agent, "enter")
        runs = runs_list(app)
        await until(pilot, lambda: runs.row_count == 6)
        await pilot.press("G")
        assert runs.cursor_row == runs.row_count - 1
        await pilot.press("k")
        assert runs.cursor_row == runs.row_count - 2
        await pilot.press("g", "j")  # one g then another key: no jump
        assert runs.cursor_row == runs.row_count - 1
        await pilot.press("g", "g")
        assert runs.cursor_row == 0

        await pilot.press("4")
        table = app.screen.query_one("#approvals", DataTable)
        await until(pilot, lambda: table.row_count >= 3)
        assert table.has_focus
        await pilot.press("j")
        assert table.cursor_row == 1
        await pilot.press("G")
        assert table.cursor_row == table.row_count - 1
        await pilot.press("g", "g")
        assert table.cursor_row == 0


async def test_question_mark_lists_the_keys_of_the_screen_it_is_pressed_on(deck: Deck) -> None:
    app = deck()
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.connection == "live")
        await pilot.press("4", "question_mark")
        assert isinstance(app.screen, HelpScreen)
        shown = text_of(app.screen.query_one(Static))
        for key in ("Approvals", "Mark all", "Reject"):
            assert key in shown
        assert "Filter/search" not in shown
        assert ":find TEXT" in shown
        await pilot.press("escape", "2", "question_mark")
        shown = text_of(app.screen.query_one(Static))
        for key in ("Filter/search", "Clear filters", "First (gg)"):
            assert key in shown
        assert "Mark all" not in shown


async def test_ctrl_c_quits_even_from_a_filter(deck: Deck) -> None:
    app = deck()
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.connection == "live")
        await pilot.press("2", "slash", "x", "ctrl+c")
        await pilot.pause()
        assert app.return_code == 0
