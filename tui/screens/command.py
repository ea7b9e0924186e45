"""`:` — the command line operators know from k9s and vim: say where to go instead of
walking there (`:run 3f9a01c2`, `:agent support`, `:approvals`)."""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.screen import ModalScreen
from textual.widgets import Input, Label

COMMANDS = (
    ("run ID", "open a run by its id, or its end as lists show it"),
    ("find TEXT", "runs whose input or output holds TEXT"),
    ("agent NAME", "runs of agent NAME"),
    ("runs", "go there; also :dashboard, :approvals, :audit"),
)
HELP = ":run ID-OR-ITS-END  :find TEXT  :agent NAME  :dashboard  :runs  :approvals  :audit"


class CommandScreen(ModalScreen[str | None]):
    """Answers the command typed, or None when the operator backs out."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "dismiss(None)", "Cancel")]

    def compose(self) -> ComposeResult:
        yield Label(HELP, id="command-help")
        yield Input(placeholder="command", id="command")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.dismiss(event.value.strip() or None)
