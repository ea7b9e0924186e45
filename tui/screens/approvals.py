"""Approvals (4): the tool calls policy parked for a human. For the selected one: which
agent wants which tool, its arguments, the rule that parked it and why. `a` approves and
`r` rejects, each only after the operator gave a reason and confirmed. The list follows
the live feed, so a call another operator decided disappears by itself."""

from __future__ import annotations

from typing import ClassVar

from rich.console import Group
from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, VerticalScroll
from textual.widgets import DataTable, Static

from services.client import FerrumDeckError, LiveEvent
from services.contract.api import Approval, ApprovalStatus
from services.contract.events import ApprovalChanged
from tui.humanize import age
from tui.screens.deck import DeckScreen
from tui.screens.modals import ReasonScreen
from tui.screens.run_detail import pretty_json


class ApprovalsScreen(DeckScreen):
    MODE = "approvals"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("a", "decide(True)", "Approve"),
        Binding("r", "decide(False)", "Reject"),
    ]

    def compose_body(self) -> ComposeResult:
        with Horizontal(id="approvals-body"):
            yield DataTable(id="approvals", cursor_type="row", zebra_stripes=True)
            with VerticalScroll(id="approval-scroll"):
                yield Static("No approvals waiting.", id="approval-body")

    def on_mount(self) -> None:
        table = self.query_one("#approvals", DataTable)
        for label in ("agent", "tool", "rule", "waiting"):
            table.add_column(label, key=label)
        self._approvals: dict[str, Approval] = {}
        super().on_mount()
        table.focus()

    def on_screen_resume(self) -> None:
        self.reload()

    async def load(self) -> None:
        try:
            found = [a async for a in self.deck.client.iter_approvals(status="pending")]
        except FerrumDeckError as error:
            self.report(error)
            return
        table = self.query_one("#approvals", DataTable)
        current = self._selected()
        self._approvals = {str(a.id): a for a in found}
        table.clear()
        now = self.deck.clock()
        for approval_id, approval in self._approvals.items():
            table.add_row(
                approval.agent,
                approval.tool,
                approval.rule or "",
                age(approval.created_at, now),
                key=approval_id,
            )
        if current is not None and str(current.id) in table.rows:
            table.move_cursor(row=table.get_row_index(str(current.id)), animate=False)
        self._show_selected()

    def _selected(self) -> Approval | None:
        table = self.query_one("#approvals", DataTable)
        if not table.row_count:
            return None
        key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        return self._approvals.get(key or "")

    def _show_selected(self) -> None:
        approval = self._selected()
        body = self.query_one("#approval-body", Static)
        if approval is None:
            body.update("No approvals waiting.")
            return
        body.update(
            Group(
                Text(f"{approval.agent} wants to call {approval.tool}", style="bold"),
                Text(f"run {approval.run_id} · step {approval.step_seq}", style="dim"),
                Text("\nArguments", style="bold underline"),
                pretty_json(approval.arguments),
                Text("\nRule", style="bold underline"),
                Text(f"{approval.rule or '(none)'} (policy v{approval.policy_version})"),
                Text(approval.explanation),
                Text(
                    "\nexpires "
                    + (approval.expires_at.isoformat() if approval.expires_at else "never"),
                    style="dim",
                ),
            )
        )

    def on_data_table_row_highlighted(self) -> None:
        self._show_selected()

    def on_live(self, event: LiveEvent) -> None:
        if isinstance(event.payload, ApprovalChanged):
            self.reload()

    def action_decide(self, approve: bool) -> None:
        approval = self._selected()
        if approval is None:
            self.notify("No approval selected.", severity="warning")
            return
        verb = "Approve" if approve else "Reject"
        self.app.push_screen(
            ReasonScreen(f"{verb} {approval.agent}'s call of {approval.tool}?", verb),
            lambda reason: self._decided(approval, approve, reason),
        )

    def _decided(self, approval: Approval, approve: bool, reason: str | None) -> None:
        if reason is not None:
            self._decide(approval, approve, reason)

    @work(group="decide")
    async def _decide(self, approval: Approval, approve: bool, reason: str) -> None:
        client = self.deck.client
        try:
            if approve:
                decided = await client.approve(approval.id, reason)
            else:
                decided = await client.reject(approval.id, reason)
        except FerrumDeckError as error:
            self.report(error)
        else:
            word = "approved" if decided.status is ApprovalStatus.APPROVED else "rejected"
            self.notify(f"{approval.tool} for {approval.agent}: {word}.")
        self.reload()
        self.deck.refresh_pending()
