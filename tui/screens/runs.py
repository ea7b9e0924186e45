"""Runs (2): every run, newest first, a page at a time from the gateway (scrolling near the
end fetches the next), updated live in place: a run whose status changes keeps its row and
the cursor stays where the operator put it; a new run appears on top.

Status and agent filters go to the gateway; `/` narrows the loaded rows by text.
"""

from __future__ import annotations

from typing import ClassVar

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal
from textual.widgets import DataTable, Input, Select, Static

from services.client import FerrumDeckError, LiveEvent
from services.contract.api import Run
from services.contract.events import RunChanged
from services.contract.runs import RunStatus
from tui.humanize import age, count, money
from tui.screens.deck import DeckScreen
from tui.status_style import status_text

PAGE = 100
_PREFETCH_ROWS = 20
COLUMNS = (
    ("run", "id"),
    ("status", "status"),
    ("agent", "agent"),
    ("age", "age"),
    ("steps", "steps"),
    ("tokens", "tokens"),
    ("cost", "cost"),
)


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
        yield DataTable(id="runs", cursor_type="row", zebra_stripes=True)
        yield Static("", id="runs-info")

    def on_mount(self) -> None:
        table = self.query_one("#runs", DataTable)
        for label, key in COLUMNS:
            table.add_column(label, key=key)
        self._runs: dict[str, Run] = {}
        self._next: str | None = None
        self._fetching_more = False
        super().on_mount()
        table.focus()

    def on_screen_resume(self) -> None:
        self.reload()

    def action_focus_filter(self, selector: str) -> None:
        self.query_one(selector).focus()

    # what is shown

    def _filters(self) -> tuple[str | None, str | None]:
        status = self.query_one("#status", Select).value
        agent = self.query_one("#agent", Input).value.strip() or None
        return (None if status is Select.NULL else str(status)), agent

    def _shown(self, run: Run) -> bool:
        text = self.query_one("#text", Input).value.strip().lower()
        return not text or any(
            text in value for value in (str(run.id), run.agent, run.status.value)
        )

    def _cells(self, run: Run) -> tuple[object, ...]:
        return (
            str(run.id)[-8:],
            status_text(run.status.value),
            f"{run.agent}@{run.agent_version}",
            age(run.created_at, self.deck.clock()),
            str(run.steps_count),
            count(run.usage.total_tokens),
            money(run.usage.cost_usd),
        )

    def _render_rows(self) -> None:
        """Rebuild the table from the loaded runs, keeping the cursor on the same run."""
        table = self.query_one("#runs", DataTable)
        current = self._cursor_key()
        table.clear()
        for run_id, run in self._runs.items():
            if self._shown(run):
                table.add_row(*self._cells(run), key=run_id)
        if current is not None and current in table.rows:
            table.move_cursor(row=table.get_row_index(current), animate=False)
        self._show_info()

    def _cursor_key(self) -> str | None:
        table = self.query_one("#runs", DataTable)
        if not table.row_count:
            return None
        key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        return key

    def _show_info(self) -> None:
        table = self.query_one("#runs", DataTable)
        more = "; scroll for more" if self._next else ""
        self.query_one("#runs-info", Static).update(
            f"{table.row_count} shown of {len(self._runs)} loaded{more}"
        )

    # loading

    async def load(self) -> None:
        status, agent = self._filters()
        try:
            page = await self.deck.client.runs(status=status, agent=agent, limit=PAGE)
        except FerrumDeckError as error:
            self.report(error)
            return
        self._runs = {str(run.id): run for run in page.items}
        self._next = page.next_cursor
        self._render_rows()

    @work(group="runs-more")
    async def _load_more(self) -> None:
        status, agent = self._filters()
        try:
            page = await self.deck.client.runs(
                status=status, agent=agent, limit=PAGE, cursor=self._next
            )
        except FerrumDeckError as error:
            self.report(error)
            return
        finally:
            self._fetching_more = False
        table = self.query_one("#runs", DataTable)
        for run in page.items:
            run_id = str(run.id)
            if run_id in self._runs:
                continue
            self._runs[run_id] = run
            if self._shown(run):
                table.add_row(*self._cells(run), key=run_id)
        self._next = page.next_cursor
        self._show_info()

    @work(group="run-refresh")
    async def _refresh_run(self, run_id: str) -> None:
        try:
            run = await self.deck.client.run(run_id)
        except FerrumDeckError as error:
            self.report(error)
            return
        table = self.query_one("#runs", DataTable)
        if run_id in self._runs:
            self._runs[run_id] = run
            if run_id in table.rows:
                for (_, key), value in zip(COLUMNS, self._cells(run), strict=True):
                    table.update_cell(run_id, key, value)
            return
        self._runs = {run_id: run, **self._runs}
        self._render_rows()

    # events

    def on_live(self, event: LiveEvent) -> None:
        change = event.payload
        if not isinstance(change, RunChanged):
            return
        run_id = str(change.run_id)
        if run_id not in self._runs:
            status, agent = self._filters()
            if (status and change.status != status) or (agent and change.agent != agent):
                return
        self._refresh_run(run_id)

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        table = event.data_table
        if (
            self._next
            and not self._fetching_more
            and event.cursor_row >= table.row_count - _PREFETCH_ROWS
        ):
            self._fetching_more = True
            self._load_more()

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        if event.row_key.value is not None:
            self.deck.open_run(event.row_key.value)

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id == "text":
            self._render_rows()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id == "agent":
            self.reload()
        self.query_one("#runs", DataTable).focus()

    def on_select_changed(self) -> None:
        self.reload()
