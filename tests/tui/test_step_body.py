"""A step reads as what it was: a worker's note as the note it wrote (not as a call of a
tool named None), a tool call with the worker that started it."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from rich.console import Console

from services.contract.api import Step
from services.contract.runs import StepKind, StepStatus
from tui.screens.run_detail import step_body

AT = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)


def _shown(**fields: Any) -> str:
    unset = dict.fromkeys(("model", "tool", "input", "output", "error", "usage"))
    step = Step.model_validate(
        {"seq": 2, "status": StepStatus.COMPLETED, "started_at": AT, "finished_at": AT}
        | unset
        | fields
    )
    console = Console(width=80, record=True)
    console.print(step_body(step))
    return console.export_text()


def test_a_note_shows_what_it_says_and_no_tool() -> None:
    missing = {"tools_missing": [{"pattern": "mail.*", "reason": "server_unavailable"}]}
    shown = _shown(kind=StepKind.NOTE, output=missing)
    assert "tool None" not in shown
    assert "Note" in shown
    assert "server_unavailable" in shown


def test_a_tool_call_names_the_worker_that_started_it() -> None:
    shown = _shown(
        kind=StepKind.TOOL_CALL, tool="notes.write_note", input={"text": "hi"}, worker="vm3-w1"
    )
    assert "tool notes.write_note · started by worker vm3-w1" in shown
