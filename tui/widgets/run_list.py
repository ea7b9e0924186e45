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

It scrolls itself instead of being a ScrollView: a ScrollView's size is a layout
property, so every new run re-laid out the whole screen (32 ms a time, a third of the
deck's time under a burst, by cProfile); here a change is a repaint of this widget only,
and the scrollbar is a thumb drawn in the last column.
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
from textual.geometry import Region
from textual.message import Message
from textual.strip import Strip
from textual.widget import Widget

from tui.widgets.vim_keys import GoToTop

Cell = tuple[str, str]
"""A cell's text and its Rich style (`""` for the line's own)."""
Cells = tuple[Cell, ...]

_GAP = 1
_WHEEL_LINES = 3
_CACHED_LINES = 512  # a few screenfuls at any size, cursor and not


@dataclass(frozen=True)
class _Styles:
    """The styles of one frame's lines, looked up once per frame: asking the DOM for them
    per line was half the cost of drawing one."""

    line: Style
    header: Style
    cursor: Style
    thumb: Style


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


class RunList(GoToTop, Widget, can_focus=True):
    DEFAULT_CSS = """
    RunList {
        height: 1fr;
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
    RunList > .run-list--thumb {
        color: $scrollbar;
    }
    """
    COMPONENT_CLASSES: ClassVar[set[str]] = {
        "run-list--header",
        "run-list--cursor",
        "run-list--thumb",
    }
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("up,k", "cursor(-1)", "Up", show=False),
        Binding("down,j", "cursor(1)", "Down", show=False),
        Binding("pageup", "page(-1)", "Page up", show=False),
        Binding("pagedown", "page(1)", "Page down", show=False),
        Binding("home", "cursor_to(0)", "First", show=False),
        Binding("end,G", "cursor_to(-1)", "Last", show=False),
        Binding("g", "g", "First (gg)", show=False),
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
        self._top = 0  # the line of the list shown first, under the header
        self._frame: _Styles | None = None
        self._lines: LRUCache[tuple[Cells, int, Style], Strip] = LRUCache(_CACHED_LINES)

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
        """Repaint; `follow` keeps the cursor in view (callers pass whether it was), so a
        burst above a cursor the operator can see does not push it off screen."""
        if follow:
            self._scroll_to_cursor()
        self._scroll(self._top)

    def _scroll(self, top: int) -> None:
        self._top = max(0, min(top, len(self._ascending) - self._visible_rows()))
        self.refresh()

    # moving

    def _visible_rows(self) -> int:
        return max(1, self.size.height - 1)

    def _in_view(self, index: int) -> bool:
        return self._top <= index < self._top + self._visible_rows()

    def _scroll_to_cursor(self) -> None:
        index = self.cursor_row
        if index < self._top:
            self._top = index
        elif index >= self._top + self._visible_rows():
            self._top = index - self._visible_rows() + 1

    def _land(self, index: int) -> None:
        if not self._ascending:
            return
        index = max(0, min(index, len(self._ascending) - 1))
        self._cursor = self._at(index)
        self._scroll_to_cursor()
        self._scroll(self._top)
        self.post_message(self.Highlighted(self._cursor, index))

    def action_cursor(self, delta: int) -> None:
        self._land(self.cursor_row + delta)

    def action_page(self, direction: int) -> None:
        self._land(self.cursor_row + direction * self._visible_rows())

    def action_cursor_to(self, index: int) -> None:
        self._land(index if index >= 0 else len(self._ascending) - 1)

    def go_top(self) -> None:
        self.action_cursor_to(0)

    def action_select(self) -> None:
        if self._cursor is not None:
            self.post_message(self.Selected(self._cursor))

    def on_click(self, event: events.Click) -> None:
        if event.y < 1:
            return
        index = self._top + event.y - 1
        if index >= len(self._ascending):
            return
        if index == self.cursor_row:
            self.action_select()
        else:
            self._land(index)

    def on_mouse_scroll_down(self, event: events.MouseScrollDown) -> None:
        event.stop()
        self._scroll(self._top + _WHEEL_LINES)

    def on_mouse_scroll_up(self, event: events.MouseScrollUp) -> None:
        event.stop()
        self._scroll(self._top - _WHEEL_LINES)

    def on_resize(self) -> None:
        self._scroll(self._top)

    # drawing

    def _widths(self, width: int) -> list[int]:
        fixed = sum(c.width for c in self._columns) + _GAP * len(self._columns)
        flexible = max(8, width - fixed)
        return [c.width or flexible for c in self._columns]

    def render_lines(self, crop: Region) -> list[Strip]:
        self._frame = None
        return super().render_lines(crop)

    def _styles(self) -> _Styles:
        if self._frame is None:
            line = self.rich_style
            self._frame = _Styles(
                line=line,
                header=line + self.get_component_rich_style("run-list--header"),
                cursor=line + self.get_component_rich_style("run-list--cursor"),
                thumb=line + self.get_component_rich_style("run-list--thumb"),
            )
        return self._frame

    def render_line(self, y: int) -> Strip:
        width = self.size.width - 1  # the last column is the scrollbar's
        styles = self._styles()
        if y == 0:
            header = tuple((c.label, "") for c in self._columns)
            return Strip.join(
                [self._line(header, width, styles.header), Strip.blank(1, styles.header)]
            )
        index = self._top + y - 1
        if index >= len(self._ascending):
            return Strip.blank(width + 1, styles.line)
        run_id = self._at(index)
        base = styles.cursor if run_id == self._cursor else styles.line
        key = (self._cells[run_id], width, base)
        line = self._lines.get(key)
        if line is None:
            line = self._line(self._cells[run_id], width, base)
            self._lines[key] = line
        return Strip.join([line, self._thumb(y - 1, styles.thumb)])

    def _thumb(self, line: int, style: Style) -> Strip:
        """Line `line` of the scrollbar: where the screenful sits in the whole list."""
        rows, visible = len(self._ascending), self._visible_rows()
        if rows <= visible:
            return Strip.blank(1, style)
        start = self._top * visible // rows
        end = max(start + 1, (self._top + visible) * visible // rows)
        return Strip([Segment("▐" if start <= line < end else " ", style)], 1)

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
