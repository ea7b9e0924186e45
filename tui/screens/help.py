"""`?`: the keys of the screen the operator is on, then those of everywhere, read from
the bindings themselves so the page cannot drift from what the keys do."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar

from rich.text import Text
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.dom import DOMNode
from textual.screen import ModalScreen
from textual.widgets import Static

Section = tuple[str, list[tuple[str, str]]]
"""A heading, and each (keys, what they do) under it."""


def keys_of(node: DOMNode, app: App[Any]) -> list[tuple[str, str]]:
    """The deck's bindings of `node` that say what they do, the keys of one action
    together; not Textual's own (focus next, copy), which every app has."""
    by_action: dict[tuple[str, str], list[str]] = {}
    for cls in reversed(type(node).__mro__):
        if not cls.__module__.startswith("tui."):
            continue
        for binding in Binding.make_bindings(cls.__dict__.get("BINDINGS", [])):
            if binding.description:
                keys = by_action.setdefault((binding.action, binding.description), [])
                keys.append(app.get_key_display(binding))
    return [(" / ".join(keys), description) for (_, description), keys in by_action.items()]


def help_text(sections: Iterable[Section]) -> Text:
    text = Text()
    for heading, keys in sections:
        if not keys:
            continue
        text.append(f"{heading}\n", style="bold")
        width = max(len(k) for k, _ in keys)
        for key, description in keys:
            text.append(f"  {key.ljust(width)}  ", style="bold cyan")
            text.append(f"{description}\n")
        text.append("\n")
    return text


class HelpScreen(ModalScreen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape,q,question_mark", "dismiss", "Close")]

    def __init__(self, sections: list[Section]) -> None:
        super().__init__()
        self._sections = sections

    def compose(self) -> ComposeResult:
        with VerticalScroll(classes="dialog", id="help"):
            yield Static(help_text(self._sections))
