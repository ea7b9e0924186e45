"""Run detail (3): one run step by step. Each model call with the messages it was sent and
its answer; each tool call with its arguments, result, duration and the policy decision
that let it happen (or not). Totals against the agent's budget on top. A run still going
is followed live: new steps appear, and the cursor follows them if it was on the last.
`c` cancels the run after asking."""

from __future__ import annotations

import json
from typing import Any, ClassVar

from rich.console import Group, RenderableType
from rich.syntax import Syntax
from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, VerticalScroll
from textual.widgets import DataTable, Static

from services.client import FerrumDeckError, LiveEvent
from services.contract.api import Run, Step
from services.contract.events import ApprovalChanged, RunChanged, StepChanged
from services.contract.runs import Budget, StepKind
from tui.humanize import count, duration, money
from tui.screens.deck import DeckScreen
from tui.screens.modals import ConfirmScreen
from tui.status_style import status_text
from tui.widgets.vim_keys import KeyedTable


def pretty_json(value: Any) -> Syntax:
    return Syntax(
        json.dumps(value, indent=2, ensure_ascii=False, default=str),
        "json",
        theme="ansi_dark",
        word_wrap=True,
        background_color="default",
    )


def _message_text(message: Any) -> Text:
    if not isinstance(message, dict):
        return Text(str(message))
    role = str(message.get("role", "?"))
    content = message.get("content")
    text = Text(f"{role}: ", style="bold")
    text.append(content if isinstance(content, str) else json.dumps(content, default=str))
    calls = message.get("tool_calls") or []
    for call in calls:
        function = call.get("function", {}) if isinstance(call, dict) else {}
        text.append(f"\n  → calls {function.get('name')}({function.get('arguments')})")
    return text


def step_body(step: Step) -> RenderableType:
    head = Text.assemble(
        (f"Step {step.seq} · {step.kind.value} · ", "bold"),
        status_text(step.status.value),
        f" · {duration(step.started_at, step.finished_at)}",
    )
    parts: list[RenderableType] = [head]
    if step.kind is StepKind.LLM_CALL:
        parts.append(Text(f"model {step.model}", style="dim"))
        messages = step.input.get("messages", []) if isinstance(step.input, dict) else []
        parts.append(Text("\nMessages", style="bold underline"))
        parts.extend(_message_text(m) for m in messages)
        answer = step.output.get("message") if isinstance(step.output, dict) else step.output
        parts.append(Text("\nAnswer", style="bold underline"))
        parts.append(_message_text(answer))
    elif step.kind is StepKind.NOTE:
        parts.append(Text("\nNote", style="bold underline"))
        parts.append(pretty_json(step.output if step.output is not None else step.input))
    else:
        by = f" · started by worker {step.worker}" if step.worker else ""
        parts.append(Text(f"tool {step.tool}{by}", style="dim"))
        parts.append(Text("\nArguments", style="bold underline"))
        parts.append(pretty_json(step.input))
        parts.append(Text("\nResult", style="bold underline"))
        parts.append(pretty_json(step.output) if step.output is not None else Text("—"))
        if step.decision is not None:
            decision = step.decision
            parts.append(Text("\nPolicy", style="bold underline"))
            who = f", approved by {decision.approved_by}" if decision.approved_by else ""
            parts.append(
                Text(
                    f"{decision.effect.value} by rule {decision.rule or '(none)'} "
                    f"(policy v{decision.policy_version}){who}\n{decision.explanation}"
                )
            )
    if step.error:
        parts.append(Text(f"\nError: {step.error}", style="red"))
    if step.usage is not None:
        parts.append(
            Text(
                f"\ntokens {step.usage.prompt_tokens} in / {step.usage.completion_tokens} out"
                f" · cost {money(step.usage.cost_usd)}",
                style="dim",
            )
        )
    return Group(*parts)


def summary(run: Run, budget: Budget | None) -> Text:
    def of(used: str, limit: object) -> str:
        return f"{used} / {limit}" if limit is not None else used

    text = Text.assemble(
        (f"Run {run.id}  ", "bold"),
        status_text(run.status.value),
        f"  agent {run.agent}@{run.agent_version}\n",
    )
    text.append(
        f"steps {of(str(run.steps_count), budget.max_steps if budget else None)}   "
        f"tokens {of(count(run.usage.total_tokens), budget.max_tokens if budget else None)}   "
        f"cost {of(money(run.usage.cost_usd), budget.max_cost_usd if budget else None)}"
    )
    text.append(f"\ninput: {run.input[:200]}")
    if run.output:
        text.append(f"\noutput: {run.output[:200]}")
    if run.error:
        text.append(f"\nerror: {run.error}", style="red")
    return text


class RunDetailScreen(DeckScreen):
    MODE = "detail"
    LIST = "#steps"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("j,n", "step(1)", "Next step"),
        Binding("k,p", "step(-1)", "Previous"),
        Binding("c", "cancel_run", "Cancel run"),
    ]

    def compose_body(self) -> ComposeResult:
        yield Static("No run selected: pick one on the Runs screen (2).", id="run-summary")
        with Horizontal(id="detail-body"):
            yield KeyedTable(id="steps", cursor_type="row")
            with VerticalScroll(id="step-scroll"):
                yield Static("", id="step-body")

    def on_mount(self) -> None:
        table = self.query_one("#steps", DataTable)
        for label in ("#", "kind", "status", "what", "took"):
            table.add_column(label, key=label)
        self._run_id: str | None = None
        self._run: Run | None = None
        self._budget: Budget | None = None
        self._steps: list[Step] = []
        table.focus()

    def on_screen_resume(self) -> None:
        if self.deck.selected_run != self._run_id:
            self.reload()

    async def load(self) -> None:
        run_id = self.deck.selected_run
        if run_id is None:
            return
        first = run_id != self._run_id
        self._run_id = run_id
        try:
            run = await self.deck.client.run(run_id)
            steps = [step async for step in self.deck.client.iter_steps(run_id)]
            if first or self._budget is None:
                self._budget = await self._budget_of(run)
        except FerrumDeckError as error:
            self.report(error)
            return
        self._run = run
        self.query_one("#run-summary", Static).update(summary(run, self._budget))
        self._show_steps(steps, reset=first)

    async def _budget_of(self, run: Run) -> Budget | None:
        page = await self.deck.client.agent_versions(run.agent)
        return next((a.budget for a in page.items if a.version == run.agent_version), None)

    def _show_steps(self, steps: list[Step], *, reset: bool) -> None:
        table = self.query_one("#steps", DataTable)
        at_end = not table.row_count or table.cursor_row >= table.row_count - 1
        row = 0 if reset else table.cursor_row
        self._steps = steps
        table.clear()
        for step in steps:
            table.add_row(
                str(step.seq),
                step.kind.value,
                status_text(step.status.value),
                step.tool or step.model or "",
                duration(step.started_at, step.finished_at),
                key=str(step.seq),
            )
        if steps:
            following = not reset and at_end and self._run is not None
            table.move_cursor(
                row=len(steps) - 1 if following else min(row, len(steps) - 1), animate=False
            )
        self._show_step()

    def _show_step(self) -> None:
        table = self.query_one("#steps", DataTable)
        body = self.query_one("#step-body", Static)
        if not self._steps:
            body.update("No steps yet.")
            return
        body.update(step_body(self._steps[min(table.cursor_row, len(self._steps) - 1)]))

    def on_data_table_row_highlighted(self) -> None:
        self._show_step()

    def action_step(self, delta: int) -> None:
        table = self.query_one("#steps", DataTable)
        if table.row_count:
            table.move_cursor(row=max(0, min(table.row_count - 1, table.cursor_row + delta)))

    def on_live(self, event: LiveEvent) -> None:
        change = event.payload
        if isinstance(change, RunChanged | StepChanged | ApprovalChanged) and (
            str(change.run_id) == self._run_id
        ):
            self.reload()

    def action_cancel_run(self) -> None:
        run = self._run
        if run is None:
            return
        if run.status.terminal:
            self.notify(f"Run is already {run.status.value}.", severity="warning")
            return
        self.app.push_screen(
            ConfirmScreen(f"Cancel run {str(run.id)[-8:]} of {run.agent}?", "Cancel run"),
            self._cancel_confirmed,
        )

    def _cancel_confirmed(self, confirmed: bool | None) -> None:
        if confirmed and self._run is not None:
            self._cancel(str(self._run.id))

    @work(group="cancel")
    async def _cancel(self, run_id: str) -> None:
        try:
            run = await self.deck.client.cancel_run(run_id)
        except FerrumDeckError as error:
            self.report(error)
            return
        self.notify(f"Run {run_id[-8:]} cancelled.")
        self._run = run
        self.query_one("#run-summary", Static).update(summary(run, self._budget))

    def action_requeue_run(self) -> None:
        run = self._run
        if run is None:
            return
        if run.dead_lettered_at is None:
            self.notify("Only a dead-lettered run can be queued again.", severity="warning")
            return
        self.app.push_screen(
            ConfirmScreen(f"Queue run {str(run.id)[-8:]} of {run.agent} again?", "Requeue"),
            self._requeue_confirmed,
        )

    def _requeue_confirmed(self, confirmed: bool | None) -> None:
        if confirmed and self._run is not None:
            self._requeue(str(self._run.id))

    @work(group="requeue")
    async def _requeue(self, run_id: str) -> None:
        try:
            run = await self.deck.client.requeue_run(run_id)
        except FerrumDeckError as error:
            self.report(error)
            return
        self.notify(f"Run {run_id[-8:]} queued again.")
        self._run = run
        self.query_one("#run-summary", Static).update(summary(run, self._budget))
