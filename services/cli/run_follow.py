"""`runs create --follow`: each step of a run as it is recorded, then how the run ended.

It polls the run and its steps rather than the live event feed: the steps endpoint is
the record itself, so what scrolls by is exactly what `runs show` will print later, and
a dropped connection is just a missed poll, with nothing to resynchronise.
"""

from __future__ import annotations

import sys
import time
import uuid
from collections.abc import Iterator
from typing import Any, TextIO

from services.cli.output import print_json, short
from services.client import FerrumDeck
from services.contract.api import Run, Step
from services.contract.runs import StepStatus

POLL_SECONDS = 0.5
_SPINNER = "|/-\\"


class Progress:
    """A spinner line on `stream`, only when it is a terminal (never in a pipe or a log)."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._shown = stream.isatty()
        self._turn = 0

    def tick(self, run: Run, steps: int) -> None:
        if self._shown:
            spin = _SPINNER[self._turn % len(_SPINNER)]
            self._stream.write(f"\r{spin} {run.status} · {steps} steps ")
            self._stream.flush()
            self._turn += 1

    def clear(self) -> None:
        if self._shown:
            self._stream.write("\r\033[K")
            self._stream.flush()


def step_summary(step: Step) -> str:
    """The step's error, else what it produced: an answer's text, or its output."""
    if step.error:
        return short(step.error)
    output: Any = step.output
    if isinstance(output, dict) and isinstance(output.get("message"), dict):
        message = output["message"]
        output = message.get("content") or message.get("tool_calls")
    return short(output)


def step_line(step: Step) -> str:
    tool = step.tool or "-"
    return f"step {step.seq:<3} {step.kind:<9} {step.status:<16} {tool:<24} {step_summary(step)}"


def all_steps(deck: FerrumDeck, run_id: uuid.UUID) -> Iterator[Step]:
    cursor: str | None = None
    while True:
        page = deck.steps(run_id, cursor=cursor)
        yield from page.items
        if page.next_cursor is None:
            return
        cursor = page.next_cursor


def follow(deck: FerrumDeck, run: Run, *, as_json: bool) -> Run:
    """Print steps (again whenever one changes status) until the run ends; the final run."""
    seen: dict[int, StepStatus] = {}
    status = run.status
    progress = Progress(sys.stderr)
    while True:
        current = deck.run(run.id)
        if current.status != status and not current.status.terminal and not as_json:
            progress.clear()
            print(f"run is {current.status}", flush=True)
        status = current.status
        for step in all_steps(deck, run.id):
            if seen.get(step.seq) == step.status:
                continue
            seen[step.seq] = step.status
            progress.clear()
            if as_json:
                print_json({"step": step}, lines=True)
            else:
                print(step_line(step), flush=True)
        if current.status.terminal:
            progress.clear()
            return current
        progress.tick(current, len(seen))
        time.sleep(POLL_SECONDS)
