"""The bar on top of every screen: where you are, where you can go (keys or mouse), whether
the live feed is up, and how many tool calls wait for a human, wherever you are."""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.widgets import Static

if TYPE_CHECKING:
    from tui.app import FerrumDeckApp

TABS = (
    ("dashboard", "1 Dashboard"),
    ("runs", "2 Runs"),
    ("detail", "3 Run"),
    ("approvals", "4 Approvals"),
    ("audit", "5 Audit"),
)

_CONNECTION = {
    "connecting": "◌ connecting…",
    "live": "● live",
    "reconnecting": "◌ reconnecting…",
    "offline": "✕ offline",
    "api-down": "✕ API unreachable",
}


class NavBar(Horizontal):
    def __init__(self, mode: str) -> None:
        super().__init__(id="nav")
        self._mode = mode

    def compose(self) -> ComposeResult:
        tabs = "  ".join(
            f"[reverse b] {label} [/]"
            if mode == self._mode
            else f"[@click=app.go('{mode}')] {label} [/]"
            for mode, label in TABS
        )
        yield Static(tabs, id="nav-tabs", markup=True)
        yield Static(id="nav-pending")
        yield Static(id="nav-connection")

    def on_mount(self) -> None:
        self.watch(self.app, "pending", self._show_pending)
        self.watch(self.app, "connection", self._show_connection)

    def _show_pending(self, pending: str) -> None:
        badge = self.query_one("#nav-pending", Static)
        badge.update(f"⚑ {pending} pending" if pending != "0" else "no approvals waiting")
        badge.set_class(pending != "0", "alert")

    def _show_connection(self, connection: str) -> None:
        label = self.query_one("#nav-connection", Static)
        label.update(_CONNECTION.get(connection, connection))
        label.set_class(connection != "live", "warning")
        label.tooltip = (
            cast("FerrumDeckApp", self.app).api_error if connection == "api-down" else None
        )
