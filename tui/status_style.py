"""One colour per run, step and approval status, the same on every screen, so an operator
learns them once."""

from __future__ import annotations

from rich.text import Text

_STYLES = {
    "queued": "",
    "running": "bold cyan",
    "started": "cyan",
    "waiting_approval": "bold yellow",
    "waiting_thread": "yellow",
    "pending": "bold yellow",
    "completed": "green",
    "approved": "green",
    "failed": "bold red",
    "denied": "red",
    "rejected": "red",
    "outcome_unknown": "magenta",
    "budget_exceeded": "magenta",
    "cancelled": "dim",
    "expired": "dim",
}


def status_style(status: str) -> str:
    return _STYLES.get(status, "")


def status_text(status: str) -> Text:
    return Text(status, style=status_style(status))
