"""Audit (5): who did what, newest first, filtered by action, actor, target and time;
the selected event in full; and `v` to verify the hash chain, which shows either that it
is intact or the first link that is broken and why.

Live: every change of a run, step or approval is audited, so after such events the
screen reads the newest page again (at most every `_LIVE_SECONDS`, only while shown and
not bounded by `until`) and puts what is new on top. The cursor stays on its event; if
that is not the top, the line above the list counts the new events until it gets there.
"""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar

from rich.console import Group
from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, VerticalScroll
from textual.widgets import DataTable, Input, Static

from services.client import FerrumDeckError, LiveEvent, NotFound
from services.contract.audit import AuditEvent
from services.contract.events import ApprovalChanged, RunChanged, StepChanged
from tui.screens.deck import DeckScreen
from tui.screens.run_detail import pretty_json
from tui.widgets.vim_keys import KeyedTable

PAGE = 100
_LIVE_SECONDS = 2.0
_FILTERS = ("action", "actor", "target", "since", "until")


class AuditScreen(DeckScreen):
    MODE = "audit"
    LIST = "#audit"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("f", "focus_filters", "Filter"),
        Binding("v", "verify", "Verify chain"),
    ]

    def compose_body(self) -> ComposeResult:
        with Horizontal(id="audit-filters"):
            for name in _FILTERS:
                hint = " (ISO time)" if name in ("since", "until") else ""
                yield Input(placeholder=name + hint, id=f"audit-{name}")
        yield Static("", id="verify-result")
        with Horizontal(id="audit-body"):
            yield KeyedTable(id="audit", cursor_type="row", zebra_stripes=True)
            with VerticalScroll(id="audit-scroll"):
                yield Static("", id="audit-event")

    def on_mount(self) -> None:
        table = self.query_one("#audit", DataTable)
        for label in ("#", "time", "actor", "action", "target"):
            table.add_column(label, key=label)
        self._events: dict[str, AuditEvent] = {}
        self._next: str | None = None
        self._fetching_more = False
        self._stale = False
        self._unseen = 0
        table.focus()
        self.set_interval(_LIVE_SECONDS, self._catch_up)

    def on_live(self, event: LiveEvent) -> None:
        if isinstance(event.payload, RunChanged | StepChanged | ApprovalChanged):
            self._stale = True

    def _catch_up(self) -> None:
        if self._stale and self.is_current and self._text("until") is None:
            self._stale = False
            self._fetch_newer()

    @work(group="audit-newer", exclusive=False)
    async def _fetch_newer(self) -> None:
        await self._fetch(reset=False, newer=True)

    def action_focus_filters(self) -> None:
        self.query_one("#audit-action", Input).focus()

    def _text(self, name: str) -> str | None:
        return self.query_one(f"#audit-{name}", Input).value.strip() or None

    def _time(self, name: str) -> datetime | None:
        raw = self._text(name)
        try:
            return None if raw is None else datetime.fromisoformat(raw)
        except ValueError:
            raise ValueError(f"{name}: not an ISO date or time: {raw}") from None

    async def load(self) -> None:
        await self._fetch(reset=True)

    @work(group="audit-more")
    async def _fetch_more(self) -> None:
        await self._fetch(reset=False)

    async def _fetch(self, *, reset: bool, newer: bool = False) -> None:
        try:
            since, until = self._time("since"), self._time("until")
        except ValueError as error:
            self.notify(str(error), severity="error")
            return
        try:
            page = await self.deck.client.audit(
                action=self._text("action"),
                actor=self._text("actor"),
                target=self._text("target"),
                since=since,
                until=until,
                limit=PAGE,
                cursor=None if reset or newer else self._next,
            )
        except NotFound:
            self.query_one("#verify-result", Static).update(
                "This gateway has no audit log yet (GET /v1/audit answered 404)."
            )
            return
        except FerrumDeckError as error:
            self.report(error)
            return
        finally:
            if not newer:
                self._fetching_more = False
        table = self.query_one("#audit", DataTable)
        if newer:
            self._put_newer(table, page.items)
            return
        if reset:
            self._events = {}
            table.clear()
        for event in page.items:
            self._add(table, event)
        self._next = page.next_cursor
        self._show_selected()

    def _add(self, table: DataTable[object], event: AuditEvent) -> bool:
        key = str(event.id)
        if key in self._events:
            return False
        self._events[key] = event
        table.add_row(
            key,
            event.created_at.strftime("%Y-%m-%d %H:%M:%S"),
            event.actor,
            event.action,
            event.target,
            key=key,
        )
        return True

    def _put_newer(self, table: DataTable[object], events: list[AuditEvent]) -> None:
        """The newest page's events not shown yet, on top; the cursor on its event. (A
        gap wider than a page between them and the rest is closed by the next reload.)"""
        newest = max((int(k) for k in self._events), default=0)
        added = sum(self._add(table, e) for e in events if e.id > newest)
        if not added:
            return
        current = self._cursor_key(table)
        table.sort("#", key=int, reverse=True)
        if current is not None:
            row = table.get_row_index(current)
            table.move_cursor(row=row, animate=False)
            self._unseen = row
        self._show_unseen()

    def _show_unseen(self) -> None:
        self.query_one("#verify-result", Static).update(
            f"▲ {self._unseen} new events above (gg)" if self._unseen else ""
        )

    def _cursor_key(self, table: DataTable[object]) -> str | None:
        if not table.row_count:
            return None
        key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        return None if key is None else str(key)

    def _show_selected(self) -> None:
        table = self.query_one("#audit", DataTable)
        body = self.query_one("#audit-event", Static)
        if not table.row_count:
            body.update("No audit events match.")
            return
        key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        event = self._events.get(key or "")
        if event is None:
            return
        body.update(
            Group(
                Text(f"#{event.id} {event.action} on {event.target}", style="bold"),
                Text(f"by {event.actor} ({event.actor_kind.value}) in {event.project}"),
                Text(f"at {event.created_at.isoformat()}  request {event.request_id or '—'}"),
                Text("\nDetails", style="bold underline"),
                pretty_json(event.details),
                Text(f"\nprev {event.prev_hash}\nhash {event.hash}", style="dim"),
            )
        )

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        self._show_selected()
        if self._unseen and event.cursor_row < self._unseen:
            self._unseen = event.cursor_row
            self._show_unseen()
        if (
            self._next
            and not self._fetching_more
            and event.cursor_row >= event.data_table.row_count - 20
        ):
            self._fetching_more = True
            self._fetch_more()

    def on_input_submitted(self) -> None:
        self.reload()
        self.query_one("#audit", DataTable).focus()

    def action_verify(self) -> None:
        self._verify()

    @work(exclusive=True, group="audit-verify")
    async def _verify(self) -> None:
        result = self.query_one("#verify-result", Static)
        result.update("verifying…")
        try:
            verification = await self.deck.client.verify_audit()
        except FerrumDeckError as error:
            result.update("")
            self.report(error)
            return
        if verification.intact:
            result.update(Text(f"✓ chain intact: {verification.events} events", style="green"))
        else:
            broken = verification.first_broken
            where = f"event #{broken.id}: {broken.reason}" if broken else "unknown link"
            result.update(Text(f"✕ chain broken at {where}", style="bold red"))
