"""`j`/`k`/`G`/`gg` in every list, as k9s, lazygit and less have them.

`gg` is two presses, which a binding cannot say: the first `g` arms, and the next key
either is `g` (to the top) or disarms it, so `g` then `j` is just `j`.
"""

from __future__ import annotations

from typing import ClassVar

from textual import events
from textual.binding import Binding, BindingType
from textual.widgets import DataTable


class GoToTop:
    """The `gg` of a list: mixed into a widget, which says what the top is."""

    _armed = False

    def action_g(self) -> None:
        self._armed = not self._armed
        if not self._armed:
            self.go_top()

    def go_top(self) -> None:
        raise NotImplementedError

    def on_key(self, event: events.Key) -> None:
        if event.key != "g":
            self._armed = False


class KeyedTable(GoToTop, DataTable[object]):
    """A DataTable that also moves with `j`, `k`, `G` and `gg`."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("j", "cursor_down", "Down", show=False),
        Binding("k", "cursor_up", "Up", show=False),
        Binding("G", "scroll_bottom", "Last", show=False),
        Binding("g", "g", "First (gg)", show=False),
    ]

    def go_top(self) -> None:
        self.action_scroll_top()
