"""`RunList`: the Runs screen's list, newest first, rendering only the lines on screen.

Textual's DataTable held every loaded run as a row and rendered its cells through Rich;
any change to it dropped its whole render cache, so each live update a second re-rendered
the screenful, and a key press arriving meanwhile waited behind it (deck p99 752 ms
under a 300 runs/s burst, two thirds of the deck's time in the table's repaint;
bench/README.md). Here a run's line is drawn from its cells as a few segments and cached
by what it shows, so a live update costs the lines that changed: a new run on top
shifts the others down without redrawing them, and moving the cursor redraws two lines.

Order is by id, descending: run ids are UUIDv7, so that is newest first. The cursor
stays on its run, not on its line, whatever arrives or leaves above it.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import ClassVar

from rich.segment import Segment
from rich.style import Style
from textual import events
from textual.binding import Binding, BindingType
from textual.cache import LRUCache
from textual.geometry import Size
from textual.message import Message
from textual.scroll_view import ScrollView
from textual.strip import Strip

Cell = tuple[str, str]
"""A cell's text and its Rich style (`""` for the line's own)."""
Cells = tuple[Cell, ...]

_GAP = 1
_CACHED_LINES = 512  # a few screenfuls at any size, cursor and not


@dataclass(frozen=True)
class Column:
    key: str
    label: str
    width: int
    """Cells wider are cut in the middle; 0 takes the room the others leave."""


def fit(text: str, width: int) -> str:
    """`text` in exactly `width` cells: padded, or cut in the middle, where ids and names
    keep what tells them apart (their ends)."""
    if len(text) <= width:
        return text.ljust(width)
    if width <= 1:
        return text[:width]
    head = (width - 1) // 2
    return f"{text[:head]}…{text[len(text) - (width - 1 - head) :]}"


class RunList(ScrollView, can_focus=True):
    DEFAULT_CSS = """
    RunList {
        background: $surface;
    }
    RunList > .run-list--header {
        text-style: bold;
        background: $panel;
    }
    RunList > .run-list--cursor {
        background: $block-cursor-blurred-background;
    }
    RunList:focus > .run-list--cursor {
        background: $block-cursor-background;
        color: $block-cursor-foreground;
    }
    """
    COMPONENT_CLASSES: ClassVar[set[str]] = {"run-list--header", "run-list--cursor"}
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("up,k", "cursor(-1)", "Up", show=False),
        Binding("down,j", "cursor(1)", "Down", show=False),
        Binding("pageup", "page(-1)", "Page up", show=False),
        Binding("pagedown", "page(1)", "Page down", show=False),
        Binding("home", "cursor_to(0)", "First", show=False),
        Binding("end,G", "cursor_to(-1)", "Last", show=False),
        Binding("enter", "select", "Open", show=False),
    ]

    class Highlighted(Message):
        """The cursor came to rest on a run (`index` lines from the top of the list)."""

        def __init__(self, run_id: str, index: int) -> None:
            super().__init__()
            self.run_id = run_id
            self.index = index

    class Selected(Message):
        def __init__(self, run_id: str) -> None:
            super().__init__()
            self.run_id = run_id

    def __init__(self, columns: Sequence[Column], *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._columns = tuple(columns)
        self._ascending: list[str] = []
        self._cells: dict[str, Cells] = {}
        self._cursor: str | None = None
        self._lines: LRUCache[tuple[Cells, int, bool, bool], Strip] = LRUCache(_CACHED_LINES)

    # what is listed

    @property
    def row_count(self) -> int:
        return len(self._ascending)

    @property
    def cursor_key(self) -> str | None:
        return self._cursor

    @property
    def cursor_row(self) -> int:
        return 0 if self._cursor is None else self._index(self._cursor)

    def run_ids(self) -> list[str]:
        """Every run listed, in the order shown."""
        return self._ascending[::-1]

    def __contains__(self, run_id: object) -> bool:
        return run_id in self._cells

    def cell(self, run_id: str, key: str) -> str:
        """What `run_id`'s line shows in column `key`."""
        n = next(i for i, column in enumerate(self._columns) if column.key == key)
        return self._cells[run_id][n][0]

    def replace(self, rows: Iterable[tuple[str, Cells]]) -> None:
        """List exactly `rows`, the cursor staying on its run if that is among them."""
        self._cells = dict(rows)
        self._ascending = sorted(self._cells)
        if self._cursor not in self._cells:
            self._cursor = self._ascending[-1] if self._ascending else None
        self._changed(follow=True)

    def update(self, put: Iterable[tuple[str, Cells]] = (), remove: Iterable[str] = ()) -> None:
        """Add or rewrite the lines of `put`, drop those of `remove`, then repaint once."""
        shown = self._in_view(self.cursor_row)
        for run_id, cells in put:
            if run_id not in self._cells:
                bisect.insort(self._ascending, run_id)
            self._cells[run_id] = cells
        for run_id in remove:
            if run_id not in self._cells:
                continue
            index = self._index(run_id)
            del self._cells[run_id]
            del self._ascending[len(self._ascending) - 1 - index]
            if self._cursor == run_id:
                keys = self._ascending
                self._cursor = keys[max(0, len(keys) - 1 - index)] if keys else None
        if self._cursor is None and self._ascending:
            self._cursor = self._ascending[-1]
        self._changed(follow=shown)

    def move_cursor(self, run_id: str) -> None:
        if run_id in self._cells:
            self._cursor = run_id
            self._changed(follow=True)

    def _index(self, run_id: str) -> int:
        """Line of `run_id` from the top (the newest is 0)."""
        return len(self._ascending) - 1 - bisect.bisect_left(self._ascending, run_id)

    def _at(self, index: int) -> str:
        return self._ascending[len(self._ascending) - 1 - index]

    def _changed(self, *, follow: bool) -> None:
        """Resize to the rows and repaint; `follow` keeps the cursor in view (callers pass
        whether it was), so a burst above a cursor the operator can see does not push it
        off screen."""
        self.virtual_size = Size(self.size.width, len(self._ascending) + 1)
        if follow:
            self._scroll_to_cursor()
        self.refresh()

    # moving

    def _visible_rows(self) -> int:
        return max(1, self.size.height - 1)

    def _in_view(self, index: int) -> bool:
        top = round(self.scroll_y)
        return top <= index < top + self._visible_rows()

    def _scroll_to_cursor(self) -> None:
        index = self.cursor_row
        top = round(self.scroll_y)
        if index < top:
            self.scroll_to(y=index, animate=False, immediate=True)
        elif index >= top + self._visible_rows():
            self.scroll_to(y=index - self._visible_rows() + 1, animate=False, immediate=True)

    def _land(self, index: int) -> None:
        if not self._ascending:
            return
        index = max(0, min(index, len(self._ascending) - 1))
        self._cursor = self._at(index)
        self._scroll_to_cursor()
        self.refresh()
        self.post_message(self.Highlighted(self._cursor, index))

    def action_cursor(self, delta: int) -> None:
        self._land(self.cursor_row + delta)

    def action_page(self, direction: int) -> None:
        self._land(self.cursor_row + direction * self._visible_rows())

    def action_cursor_to(self, index: int) -> None:
        self._land(index if index >= 0 else len(self._ascending) - 1)

    def action_select(self) -> None:
        if self._cursor is not None:
            self.post_message(self.Selected(self._cursor))

    def on_click(self, event: events.Click) -> None:
        if event.y < 1:
            return
        index = round(self.scroll_y) + event.y - 1
        if index >= len(self._ascending):
            return
        if index == self.cursor_row:
            self.action_select()
        else:
            self._land(index)

    # drawing

    def _widths(self, width: int) -> list[int]:
        fixed = sum(c.width for c in self._columns) + _GAP * len(self._columns)
        flexible = max(8, width - fixed)
        return [c.width or flexible for c in self._columns]

    def render_line(self, y: int) -> Strip:
        width = self.size.width
        if y == 0:
            header = tuple((c.label, "") for c in self._columns)
            style = self.rich_style + self.get_component_rich_style("run-list--header")
            return self._line(header, width, style)
        index = round(self.scroll_y) + y - 1
        if index >= len(self._ascending):
            return Strip.blank(width, self.rich_style)
        run_id = self._at(index)
        cursor = run_id == self._cursor
        key = (self._cells[run_id], width, cursor, self.has_focus)
        line = self._lines.get(key)
        if line is None:
            base = self.rich_style
            if cursor:
                base += self.get_component_rich_style("run-list--cursor")
            line = self._line(self._cells[run_id], width, base)
            self._lines[key] = line
        return line

    def _line(self, cells: Cells, width: int, base: Style) -> Strip:
        segments = []
        for (text, style), cell_width in zip(cells, self._widths(width), strict=True):
            segments.append(Segment(fit(text, cell_width), base + Style.parse(style)))
            segments.append(Segment(" " * _GAP, base))
        return Strip(segments).adjust_cell_length(width, base)

    def on_focus(self) -> None:
        self.refresh()

    def on_blur(self) -> None:
        self.refresh()
