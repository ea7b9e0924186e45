"""The two questions the deck asks before it changes anything: "are you sure?" and
"why?". Both answer None when the operator backs out, so nothing happens by accident."""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label


class ConfirmScreen(ModalScreen[bool]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "dismiss(False)", "Cancel"),
        Binding("y", "dismiss(True)", "Yes"),
    ]

    def __init__(self, question: str, action: str) -> None:
        super().__init__()
        self._question = question
        self._action = action

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(self._question, classes="question")
            with Horizontal(classes="buttons"):
                yield Button(self._action, variant="error", id="yes")
                yield Button("Cancel", id="no")

    def on_mount(self) -> None:
        self.query_one("#no", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")


class ReasonScreen(ModalScreen[str | None]):
    """Asks for the reason a decision is taken, then for the decision itself."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "dismiss(None)", "Cancel")]

    def __init__(self, question: str, action: str) -> None:
        super().__init__()
        self._question = question
        self._action = action

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(self._question, classes="question")
            yield Input(placeholder="reason (required)", id="reason", max_length=2000)
            yield Label("", id="reason-error", classes="error")
            with Horizontal(classes="buttons"):
                yield Button(self._action, variant="primary", id="confirm")
                yield Button("Cancel", id="cancel")

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "cancel":
            self.dismiss(None)
        else:
            self._confirm()

    def on_input_submitted(self) -> None:
        self._confirm()

    def _confirm(self) -> None:
        reason = self.query_one("#reason", Input).value.strip()
        if not reason:
            self.query_one("#reason-error", Label).update("A reason is required.")
            return
        self.dismiss(reason)
