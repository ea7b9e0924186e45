"""Approvals (4): the tool calls policy parked for a human. For the selected one: which
agent wants which tool, its arguments, the rule that parked it and why. `a` approves and
`r` rejects, each only after the operator gave a reason and confirmed. The list follows
the live feed, so a call another operator decided disappears by itself.

`space` marks calls and `*` marks every one listed, `u` every call that retries one of
unknown outcome (a worker died during it), `W` those of them whose lost call the same
worker as the selected one's started, `R` every call of the selected call's run;
`a` / `r` then decide all the marked ones with one reason in one request (`POST
/v1/approvals/decide`: all or none), which is how an operator refuses fifty calls of
unknown outcome after a worker died.

A retry is told by its run's steps, not by the explanation's words: the gateway parks it
with the tool and arguments of a step marked `outcome_unknown` before it."""

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
from tui.unknown_outcomes import unknown_outcome_retries
from tui.widgets.vim_keys import KeyedTable

_MARK = "✓"


class ApprovalsScreen(DeckScreen):
    MODE = "approvals"
    LIST = "#approvals"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("a", "decide(True)", "Approve"),
        Binding("r", "decide(False)", "Reject"),
        Binding("space", "mark", "Mark"),
        Binding("asterisk", "mark_all", "Mark all"),
        Binding("u", "mark_unknown", "Mark unknown outcomes"),
        Binding("W", "mark_worker", "Mark this worker's unknown outcomes"),
        Binding("R", "mark_run", "Mark this run's calls"),
    ]

    def compose_body(self) -> ComposeResult:
        with Horizontal(id="approvals-body"):
            yield KeyedTable(id="approvals", cursor_type="row", zebra_stripes=True)
            with VerticalScroll(id="approval-scroll"):
                yield Static("No approvals waiting.", id="approval-body")

    def on_mount(self) -> None:
        table = self.query_one("#approvals", DataTable)
        table.add_column("", key="mark", width=1)
        for label in ("agent", "tool", "rule", "waiting"):
            table.add_column(label, key=label)
        self._approvals: dict[str, Approval] = {}
        self._marked: set[str] = set()
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
        self._marked &= set(self._approvals)
        table.clear()
        now = self.deck.clock()
        for approval_id, approval in self._approvals.items():
            table.add_row(
                _MARK if approval_id in self._marked else "",
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

    def action_mark(self) -> None:
        approval = self._selected()
        if approval is not None:
            self._set_marks([str(approval.id)], str(approval.id) not in self._marked)

    def action_mark_all(self) -> None:
        self._set_marks(list(self._approvals), self._marked != set(self._approvals))

    def action_mark_run(self) -> None:
        approval = self._selected()
        if approval is not None:
            run = [i for i, a in self._approvals.items() if a.run_id == approval.run_id]
            self._set_marks(run, True)
            self.notify(f"{len(self._marked)} calls marked: a / r decides them.")

    @work(group="mark-unknown", exclusive=True)
    async def action_mark_unknown(self) -> None:
        retries = await self._unknown_outcomes()
        if retries is None:
            return
        found = [i for i in retries if i in self._approvals]  # still pending after the reads
        self._set_marks(found, True)
        if found:
            self.notify(f"{len(found)} calls of unknown outcome marked: a / r decides them.")
        else:
            self.notify("No call waiting here retries one of unknown outcome.")

    @work(group="mark-unknown", exclusive=True)
    async def action_mark_worker(self) -> None:
        selected = self._selected()
        retries = await self._unknown_outcomes()
        if selected is None or retries is None:
            return
        if str(selected.id) not in retries:
            self.notify(
                "The selected call does not retry one of unknown outcome: no worker to follow.",
                severity="warning",
            )
            return
        worker = retries[str(selected.id)]
        found = [i for i, w in retries.items() if w == worker and i in self._approvals]
        self._set_marks(found, True)
        self.notify(
            f"{len(found)} calls of unknown outcome of worker {worker or '(not recorded)'} "
            "marked: a / r decides them."
        )

    async def _unknown_outcomes(self) -> dict[str, str | None] | None:
        try:
            return await unknown_outcome_retries(self.deck.client, list(self._approvals.values()))
        except FerrumDeckError as error:
            self.report(error)
            return None

    def _set_marks(self, approval_ids: list[str], marked: bool) -> None:
        table = self.query_one("#approvals", DataTable)
        for approval_id in approval_ids:
            if marked:
                self._marked.add(approval_id)
            else:
                self._marked.discard(approval_id)
            table.update_cell(approval_id, "mark", _MARK if marked else "")

    def action_decide(self, approve: bool) -> None:
        if self._marked:
            self._ask_many(approve)
            return
        approval = self._selected()
        if approval is None:
            self.notify("No approval selected.", severity="warning")
            return
        verb = "Approve" if approve else "Reject"
        self.app.push_screen(
            ReasonScreen(f"{verb} {approval.agent}'s call of {approval.tool}?", verb),
            lambda reason: self._decided(approval, approve, reason),
        )

    def _ask_many(self, approve: bool) -> None:
        marked = [self._approvals[i] for i in sorted(self._marked)]
        verb = "Approve" if approve else "Reject"
        tools = ", ".join(sorted({a.tool for a in marked}))
        self.app.push_screen(
            ReasonScreen(f"{verb} all {len(marked)} marked calls ({tools})?", verb),
            lambda reason: self._decided_many(marked, approve, reason),
        )

    def _decided_many(self, marked: list[Approval], approve: bool, reason: str | None) -> None:
        if reason is not None:
            self._decide_many(marked, approve, reason)

    @work(group="decide")
    async def _decide_many(self, marked: list[Approval], approve: bool, reason: str) -> None:
        try:
            decided = await self.deck.client.decide_approvals(
                [a.id for a in marked], approve=approve, reason=reason
            )
        except FerrumDeckError as error:
            self.report(error)
        else:
            self._marked.clear()
            word = "approved" if approve else "rejected"
            self.notify(f"{len(decided)} calls {word}.")
        self.reload()
        self.deck.refresh_pending()

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
