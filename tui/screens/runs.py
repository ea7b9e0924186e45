"""Runs (2): every run, newest first, a page at a time from the gateway (scrolling near the
end fetches the next), updated live in place: a run whose status changes keeps its row and
the cursor stays where the operator put it; a new run appears on top.

Live updates cost what changed, not what is loaded: a `run` event carries the whole row
(`RunRow.of_change`), the app hands events over a few times a second, and each update
rewrites the lines of the runs it touches in one go (`widgets/run_list.py` draws only
the lines on screen that changed). No event leads to a fetch, except from a gateway
whose events carry only the state, where one reload of the first page stands for all of
an update's changes.

Status and agent filters go to the gateway; `/` narrows the loaded rows by text. A row is
shown only while it matches all three: a run that changes into or out of the filter
enters or leaves, and a changed filter drops the rows it excludes at once, before the
gateway's answer, so the table never shows a run the filter says it should not.
"""

from __future__ import annotations

from typing import ClassVar

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal
from textual.widgets import Input, Select, Static

from services.client import FerrumDeckError, LiveEvent
from services.contract.events import RunChanged
from services.contract.runs import RunStatus
from tui.humanize import age, count, money
from tui.run_row import RunRow
from tui.screens.deck import DeckScreen
from tui.status_style import status_style
from tui.widgets.run_list import Cells, Column, RunList

PAGE = 100
_PREFETCH_ROWS = 20
COLUMNS = (
    Column("id", "run", 8),
    Column("status", "status", 16),
    Column("agent", "agent", 0),
    Column("age", "age", 6),
    Column("steps", "steps", 5),
    Column("tokens", "tokens", 7),
    Column("cost", "cost", 9),
)
Filters = tuple[str | None, str | None]


class RunsScreen(DeckScreen):
    MODE = "runs"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("slash", "focus_filter('#text')", "Filter"),
        Binding("s", "focus_filter('#status')", "Status"),
        Binding("g", "focus_filter('#agent')", "Agent"),
    ]

    def compose_body(self) -> ComposeResult:
        with Horizontal(id="run-filters"):
            yield Input(placeholder="/ filter loaded runs", id="text")
            yield Select([(s.value, s.value) for s in RunStatus], prompt="any status", id="status")
            yield Input(placeholder="agent (enter)", id="agent")
        yield RunList(COLUMNS, id="runs")
        yield Static("", id="runs-info")

    def on_mount(self) -> None:
        self._runs: dict[str, RunRow] = {}
        self._next: str | None = None
        self._fetching_more = False
        self._changes: dict[str, RunChanged] = {}
        self._loading = False
        self._changed_while_loading: dict[str, RunChanged] = {}
        super().on_mount()
        self._list().focus()

    def _list(self) -> RunList:
        return self.query_one("#runs", RunList)

    def on_screen_resume(self) -> None:
        self.reload()

    def show_agent(self, agent: str) -> None:
        """Only `agent`'s runs, as if the operator had typed it in the agent filter."""
        self.query_one("#agent", Input).value = agent
        self._drop_excluded()
        self.reload()

    def action_focus_filter(self, selector: str) -> None:
        self.query_one(selector).focus()

    # what is shown

    def _filters(self) -> Filters:
        status = self.query_one("#status", Select).value
        agent = self.query_one("#agent", Input).value.strip() or None
        return (None if status is Select.NULL else str(status)), agent

    def _listed(self, row: RunRow, filters: Filters) -> bool:
        """Whether the gateway's listing under `filters` holds `row`."""
        status, agent = filters
        return (status is None or row.status == status) and (agent is None or row.agent == agent)

    def _shown(self, row: RunRow) -> bool:
        text = self.query_one("#text", Input).value.strip().lower()
        return not text or any(text in value for value in (row.id, row.agent, row.status.value))

    def _cells(self, row: RunRow) -> Cells:
        return (
            (row.id[-8:], ""),
            (row.status.value, status_style(row.status.value)),
            (f"{row.agent}@{row.agent_version}", ""),
            (age(row.created_at, self.deck.clock()), ""),
            (str(row.steps), ""),
            (count(row.total_tokens), ""),
            (money(row.cost_usd), ""),
        )

    def _render_rows(self) -> None:
        """List the loaded runs the text filter shows, keeping the cursor on its run: for a
        new page or text filter, never for a live change."""
        self._list().replace(
            (run_id, self._cells(row)) for run_id, row in self._runs.items() if self._shown(row)
        )
        self._show_info()

    def _show_info(self) -> None:
        more = "; scroll for more" if self._next else ""
        # One line of a fixed size: no layout of the screen for each update of a burst.
        self.query_one("#runs-info", Static).update(
            f"{self._list().row_count} shown of {len(self._runs)} loaded{more}", layout=False
        )

    def _drop_excluded(self) -> None:
        """Remove at once the rows the filters now exclude, before the gateway answers."""
        filters = self._filters()
        excluded = [run_id for run_id, row in self._runs.items() if not self._listed(row, filters)]
        for run_id in excluded:
            del self._runs[run_id]
        self._list().update(remove=excluded)
        self._show_info()

    # loading

    async def load(self) -> None:
        filters = self._filters()
        self._loading = True
        try:
            page = await self.deck.client.runs(status=filters[0], agent=filters[1], limit=PAGE)
        except FerrumDeckError as error:
            self.report(error)
            return
        finally:
            self._loading = False
        changed, self._changed_while_loading = self._changed_while_loading, {}
        if filters != self._filters():
            return  # the filters changed meanwhile: a newer load is on its way
        self._runs = {str(run.id): RunRow.of_run(run) for run in page.items}
        self._next = page.next_cursor
        self._render_rows()
        # what changed after the page was read would be lost under it
        self._changes = {**changed, **self._changes}
        self.on_live_batch_end()

    @work(group="runs-more")
    async def _load_more(self) -> None:
        filters = self._filters()
        try:
            page = await self.deck.client.runs(
                status=filters[0], agent=filters[1], limit=PAGE, cursor=self._next
            )
        except FerrumDeckError as error:
            self.report(error)
            return
        finally:
            self._fetching_more = False
        if filters != self._filters():
            return
        older = []
        for run in page.items:
            run_id = str(run.id)
            if run_id in self._runs:
                continue
            row = RunRow.of_run(run)
            self._runs[run_id] = row
            if self._shown(row):
                older.append((run_id, self._cells(row)))
        self._list().update(put=older)
        self._next = page.next_cursor
        self._show_info()

    # events

    def on_live(self, event: LiveEvent) -> None:
        change = event.payload
        if isinstance(change, RunChanged):
            self._changes[str(change.run_id)] = change
            if self._loading:
                self._changed_while_loading[str(change.run_id)] = change

    def on_live_batch_end(self) -> None:
        if not self._changes:
            return
        changes, self._changes = self._changes, {}
        rows = [RunRow.of_change(change) for change in changes.values()]
        if any(row is None for row in rows):
            self.reload()  # a gateway before 0012: its events say only the state
            return
        self._apply([row for row in rows if row is not None])

    def _apply(self, rows: list[RunRow]) -> None:
        filters = self._filters()
        oldest = min(self._runs) if self._next and self._runs else None
        put: list[tuple[str, Cells]] = []
        remove: list[str] = []
        for row in rows:
            listed = self._listed(row, filters)
            if not listed or (row.id not in self._runs and oldest is not None and row.id < oldest):
                # out of the filter, or older than the loaded pages (scrolling fetches it)
                self._runs.pop(row.id, None)
                remove.append(row.id)
                continue
            self._runs[row.id] = row
            if self._shown(row):
                put.append((row.id, self._cells(row)))
            else:
                remove.append(row.id)
        self._list().update(put=put, remove=remove)
        self._show_info()

    def on_run_list_highlighted(self, event: RunList.Highlighted) -> None:
        if (
            self._next
            and not self._fetching_more
            and event.index >= self._list().row_count - _PREFETCH_ROWS
        ):
            self._fetching_more = True
            self._load_more()

    def on_run_list_selected(self, event: RunList.Selected) -> None:
        self.deck.open_run(event.run_id)

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id == "text":
            self._render_rows()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id == "agent":
            self._drop_excluded()
            self.reload()
        self._list().focus()

    def on_select_changed(self) -> None:
        self._drop_excluded()
        self.reload()
