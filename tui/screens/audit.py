"""Audit (5): who did what, newest first, filtered by action, actor, target and time;
the selected event in full; and `v` to verify the hash chain, which shows either that it
is intact or the first link that is broken and why."""

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

from services.client import FerrumDeckError, NotFound
from services.contract.audit import AuditEvent
from tui.screens.deck import DeckScreen
from tui.screens.run_detail import pretty_json
from tui.widgets.vim_keys import KeyedTable

PAGE = 100
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
        super().on_mount()
        table.focus()

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

    async def _fetch(self, *, reset: bool) -> None:
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
                cursor=None if reset else self._next,
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
            self._fetching_more = False
        table = self.query_one("#audit", DataTable)
        if reset:
            self._events = {}
            table.clear()
        for event in page.items:
            key = str(event.id)
            if key in self._events:
                continue
            self._events[key] = event
            table.add_row(
                key,
                event.created_at.strftime("%Y-%m-%d %H:%M:%S"),
                event.actor,
                event.action,
                event.target,
                key=key,
            )
        self._next = page.next_cursor
        self._show_selected()

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
