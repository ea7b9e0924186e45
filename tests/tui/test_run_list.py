"""The runs list on its own: order, a cursor that stays on its run, the keys operators know,
and a live update that draws only the lines it changed."""

from __future__ import annotations

from textual.app import App, ComposeResult

from tui.widgets.run_list import Cells, Column, RunList, fit

COLUMNS = (Column("id", "run", 4), Column("status", "status", 10), Column("agent", "agent", 0))


def cells(run_id: str, status: str = "queued", agent: str = "support") -> Cells:
    return ((run_id, ""), (status, ""), (agent, ""))


class ListApp(App[None]):
    def compose(self) -> ComposeResult:
        yield RunList(COLUMNS, id="runs")


def rows(*ids: str) -> list[tuple[str, Cells]]:
    return [(run_id, cells(run_id)) for run_id in ids]


def screen_text(app: ListApp) -> list[str]:
    """The list's lines as it draws them now, header first."""
    runs = app.query_one(RunList)
    return [runs.render_line(y).text for y in range(runs.size.height)]


async def test_newest_first_and_the_cursor_stays_on_its_run_as_runs_come_and_go() -> None:
    app = ListApp()
    async with app.run_test(size=(40, 10)) as pilot:
        runs = app.query_one(RunList)
        runs.replace(rows("a1", "a3", "a2"))
        assert runs.run_ids() == ["a3", "a2", "a1"]
        await pilot.press("down")
        assert runs.cursor_key == "a2"

        runs.update(put=rows("a4"))
        assert (runs.run_ids()[0], runs.cursor_key, runs.cursor_row) == ("a4", "a2", 2)
        runs.update(put=[("a2", cells("a2", "running"))])
        assert (runs.cell("a2", "status"), runs.cursor_key) == ("running", "a2")

        runs.update(remove=["a2"])
        assert runs.cursor_key == "a1", "the cursor falls to the next older run"
        await pilot.press("k", "k")
        assert runs.cursor_key == "a4"
        await pilot.press("G")
        assert runs.cursor_key == "a1"


async def test_the_cursor_is_kept_in_view_while_runs_arrive_above_it() -> None:
    app = ListApp()
    async with app.run_test(size=(40, 6)) as pilot:  # a header and five lines
        runs = app.query_one(RunList)
        runs.replace(rows(*(f"r{n:03}" for n in range(100))))
        await pilot.press("down", "down", "down", "down")
        assert runs.cursor_key == "r095"
        runs.update(put=rows(*(f"s{n:03}" for n in range(20))))
        await pilot.pause()
        assert runs.cursor_key == "r095"
        assert any("r095" in line for line in screen_text(app))


async def test_a_new_run_on_top_draws_one_line_not_the_screenful() -> None:
    app = ListApp()
    async with app.run_test(size=(40, 20)) as pilot:
        runs = app.query_one(RunList)
        runs.replace(rows(*(f"r{n:03}" for n in range(50))))
        await pilot.pause()
        drawn: list[Cells] = []
        line = runs._line

        def counting(cells: Cells, width: int, base: object) -> object:
            drawn.append(cells)
            return line(cells, width, base)  # type: ignore[arg-type]

        runs._line = counting  # type: ignore[method-assign,assignment]
        runs.update(put=rows("r999"))
        await pilot.pause()
        assert drawn[-1] == cells("r999")
        assert len(drawn) <= 2, "the new run and the header, nothing else"
        assert screen_text(app)[1].startswith("r999")


def test_long_values_are_cut_in_the_middle_keeping_both_ends() -> None:
    assert fit("support-agent-eu-west@12", 11) == "suppo…st@12"
    assert fit("ok", 4) == "ok  "
