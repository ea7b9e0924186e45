"""Runs (2): every run, newest first, a page at a time from the gateway (scrolling near the
end fetches the next), updated live in place: a run whose status changes keeps its row and
the cursor stays where the operator put it; a new run appears on top.

Live updates cost what changed, not what is loaded: a `run` event carries the whole row
(`RunRow.of_change`), the app hands events over a few times a second, and each update
rewrites the lines of the runs it touches in one go (`widgets/run_list.py` draws only
the lines on screen that changed). No event leads to a fetch, except from a gateway
whose events carry only the state, where one reload of the first page stands for all of
an update's changes.

Status and agent filters go to the gateway. `/` narrows the loaded rows (id, agent,
status) as it is typed, and enter sends it to the gateway as a search of every run's
input and output (`text=`, also `:find TEXT`), so a search finds runs never loaded. A
row is shown only while it matches every filter: a run that changes into or out of the
filter enters or leaves, and a changed filter drops the rows it excludes at once, before
the gateway's answer, so the table never shows a run the filter says it should not.
Events do not carry input or output, so while a search is on, a run it did not find is
not shown; the line under the list counts them, and enter searches again.

Escape clears: in a filter, that filter; on the list, every filter; with none set, it
goes back as everywhere else.
"""

from __future__ import annotations

from typing import ClassVar

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal
from textual.widgets import Input, Select, Static

from services.client import FerrumDeckError, LiveEvent
from services.contract.api import Run
from services.contract.events import RunChanged
from services.contract.runs import RunStatus
from tui.humanize import age, count, money
from tui.run_row import RunRow
from tui.screens.deck import DeckScreen
from tui.status_style import status_style
from tui.widgets.run_list import Cells, Column, RunList

PAGE = 100
_PREFETCH_ROWS = 20
_SEARCH_READS = 10
"""Requests one load makes to fill a page of search results: each reads a bounded slice of
the history (`GET /v1/runs?text=`), so a rare text may need several."""
COLUMNS = (
    Column("id", "run", 8),
    Column("status", "status", 16),
    Column("agent", "agent", 0),
    Column("age", "age", 6),
    Column("steps", "steps", 5),
    Column("tokens", "tokens", 7),
    Column("cost", "cost", 9),
)
Filters = tuple[str | None, str | None, str | None]
"""Status, agent, and the text searched for in input and output."""


class RunsScreen(DeckScreen):
    MODE = "runs"
    LIST = "#runs"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("slash", "focus_filter('#text')", "Filter/search"),
        Binding("s", "focus_filter('#status')", "Status"),
        Binding("a", "focus_filter('#agent')", "Agent"),
        Binding("escape", "clear", "Clear filters", show=False),
    ]

    def compose_body(self) -> ComposeResult:
        with Horizontal(id="run-filters"):
            yield Input(placeholder="/ search (enter)", id="text")
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
        self._search: str | None = None
        self._not_searched: set[str] = set()
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

    def search(self, text: str | None) -> None:
        """Runs whose input or output holds `text`, found by the gateway; None: all."""
        self.query_one("#text", Input).value = text or ""
        if text != self._search:
            self._search = text
            self._runs = {}
            self._next = None
            self._render_rows()
        self._not_searched = set()
        self.reload()

    def action_focus_filter(self, selector: str) -> None:
        self.query_one(selector).focus()

    def action_clear(self) -> None:
        """Escape: clear the filter being edited, or every filter from the list; with
        none set, back as everywhere."""
        focused = self.focused
        text, agent = self.query_one("#text", Input), self.query_one("#agent", Input)
        if focused is text:
            self.search(None)
        elif focused is agent:
            agent.value = ""
            self.reload()
        elif self._filtered():
            status = self.query_one("#status", Select)
            if status.value is not Select.NULL:
                status.clear()  # its Changed message reloads
            agent.value = ""
            self.search(None)
        else:
            self.deck.action_leave(False)
            return
        self._list().focus()

    def _filtered(self) -> bool:
        return any(self._filters()) or bool(self.query_one("#text", Input).value)

    # what is shown

    def _filters(self) -> Filters:
        status = self.query_one("#status", Select).value
        agent = self.query_one("#agent", Input).value.strip() or None
        return (None if status is Select.NULL else str(status)), agent, self._search

    def _listed(self, row: RunRow, filters: Filters) -> bool:
        """Whether the gateway's listing under `filters` holds `row` (under a search: only
        if the gateway found it, since no event says what a run's input holds)."""
        status, agent, search = filters
        return (
            (status is None or row.status == status)
            and (agent is None or row.agent == agent)
            and (search is None or row.id in self._runs)
        )

    def _shown(self, row: RunRow) -> bool:
        text = self.query_one("#text", Input).value.strip().lower()
        if not text or text == (self._search or "").lower():
            return True
        return any(text in value for value in (row.id, row.agent, row.status.value))

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
        if self._search is None:
            info = f"{self._list().row_count} shown of {len(self._runs)} loaded{more}"
        else:
            info = f"{len(self._runs)} found with {self._search!r} in input or output{more}"
            if self._not_searched:
                info += f"; {len(self._not_searched)} runs changed since: enter searches again"
        # One line of a fixed size: no layout of the screen for each update of a burst.
        self.query_one("#runs-info", Static).update(info, layout=False)

    def _drop_excluded(self) -> None:
        """Remove at once the rows the filters now exclude, before the gateway answers."""
        filters = self._filters()
        excluded = [run_id for run_id, row in self._runs.items() if not self._listed(row, filters)]
        for run_id in excluded:
            del self._runs[run_id]
        self._list().update(remove=excluded)
        self._show_info()

    # loading

    async def _fetch(self, filters: Filters, cursor: str | None) -> tuple[list[Run], str | None]:
        """A page of runs under `filters`; a search reads on until it has a page or has
        read `_SEARCH_READS` slices of the history."""
        status, agent, search = filters
        found: list[Run] = []
        for _ in range(_SEARCH_READS if search else 1):
            page = await self.deck.client.runs(
                status=status, agent=agent, text=search, limit=PAGE, cursor=cursor
            )
            found += page.items
            cursor = page.next_cursor
            if cursor is None or len(found) >= PAGE:
                break
        return found, cursor

    async def load(self) -> None:
        filters = self._filters()
        self._loading = True
        try:
            found, cursor = await self._fetch(filters, None)
        except FerrumDeckError as error:
            self.report(error)
            return
        finally:
            self._loading = False
        changed, self._changed_while_loading = self._changed_while_loading, {}
        if filters != self._filters():
            return  # the filters changed meanwhile: a newer load is on its way
        self._runs = {str(run.id): RunRow.of_run(run) for run in found}
        self._next = cursor
        self._render_rows()
        # what changed after the page was read would be lost under it
        self._changes = {**changed, **self._changes}
        self.on_live_batch_end()

    @work(group="runs-more")
    async def _load_more(self) -> None:
        filters = self._filters()
        try:
            found, cursor = await self._fetch(filters, self._next)
        except FerrumDeckError as error:
            self.report(error)
            return
        finally:
            self._fetching_more = False
        if filters != self._filters():
            return
        older = []
        for run in found:
            run_id = str(run.id)
            if run_id in self._runs:
                continue
            row = RunRow.of_run(run)
            self._runs[run_id] = row
            if self._shown(row):
                older.append((run_id, self._cells(row)))
        self._list().update(put=older)
        self._next = cursor
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
            if filters[2] is not None and row.id not in self._runs:
                self._not_searched.add(row.id)
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
        elif event.input.id == "text":
            self.search(event.value.strip() or None)
        self._list().focus()

    def on_select_changed(self) -> None:
        self._drop_excluded()
        self.reload()
