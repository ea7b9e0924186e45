"""`runs create --follow`: each step of a run as it is recorded, then how the run ended.

It polls the run and its steps rather than the live event feed: the steps endpoint is
the record itself, so what scrolls by is exactly what `runs show` will print later, and
a dropped connection is just a missed poll, with nothing to resynchronise. A gateway
that goes away (a restart, a deploy, a 502 from a proxy in front) is waited for with
backoff, said so on stderr, for up to `GIVE_UP_SECONDS` before the command fails.

A run that waits for a human gets the approval's id and the commands that decide it, so
whoever watches can act without looking the id up.
"""

from __future__ import annotations

import os
import shlex
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any, TextIO, TypeVar

from services.cli.output import print_json, short
from services.client import FerrumDeck, GatewayUnavailable, ServerError
from services.contract.api import Approval, ApprovalStatus, Run, Step
from services.contract.runs import RunStatus, StepKind, StepStatus

POLL_SECONDS = 0.5
RECONNECT_FIRST_SECONDS = 0.5
RECONNECT_MAX_SECONDS = 10.0
GIVE_UP_SECONDS = 300.0
# What a gateway restarting, or a proxy in front of one, answers for a moment.
_PASSING_STATUSES = frozenset({502, 503, 504})

T = TypeVar("T")
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
    """The step's error, else what it produced: an answer's text, or its output; for a
    note of missing tools, which and why."""
    if step.error:
        return short(step.error)
    output: Any = step.output
    if step.kind is StepKind.NOTE and isinstance(output, dict) and "tools_missing" in output:
        missing = [f"{m.get('pattern')} ({m.get('reason')})" for m in output["tools_missing"]]
        return short("without " + ", ".join(missing))
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


def program() -> str:
    """How the user started this command (`.venv/bin/ferrumdeck`, say), to print commands
    they can paste; `ferrumdeck` when run as a module."""
    invoked = sys.argv[0] if sys.argv else ""
    return invoked if os.path.basename(invoked) == "ferrumdeck" else "ferrumdeck"


def approval_lines(approval: Approval) -> list[str]:
    me = shlex.quote(program())
    return [
        f"approval {approval.id} waits for a human: {approval.tool} {short(approval.arguments)}",
        f'  approve: {me} approvals approve {approval.id} --reason "<why>"',
        f'  reject:  {me} approvals reject {approval.id} --reason "<why>"',
    ]


class Reconnecting:
    """Calls to the gateway that ride out its absence: waited for with backoff, said so
    on stderr, given up after `give_up_seconds` without an answer."""

    def __init__(self, progress: Progress, give_up_seconds: float = GIVE_UP_SECONDS) -> None:
        self._progress = progress
        self._give_up = give_up_seconds
        self._lost_since: float | None = None

    def call(self, fetch: Callable[[], T]) -> T:
        delay = RECONNECT_FIRST_SECONDS
        while True:
            try:
                value = fetch()
            except (GatewayUnavailable, ServerError) as exc:
                if isinstance(exc, ServerError) and exc.status not in _PASSING_STATUSES:
                    raise
                now = time.monotonic()
                if self._lost_since is None:
                    self._lost_since = now
                if now - self._lost_since >= self._give_up:
                    raise
                self._progress.clear()
                print(
                    f"ferrumdeck: lost the gateway ({exc}); trying again in {delay:g}s",
                    file=sys.stderr,
                    flush=True,
                )
                time.sleep(delay)
                delay = min(delay * 2, RECONNECT_MAX_SECONDS)
                continue
            if self._lost_since is not None:
                self._lost_since = None
                self._progress.clear()
                print("ferrumdeck: reached the gateway again", file=sys.stderr, flush=True)
            return value


def _announce(approval: Approval, as_json: bool) -> None:
    if as_json:
        print_json({"approval": approval}, lines=True)
    else:
        print("\n".join(approval_lines(approval)), flush=True)


def follow(deck: FerrumDeck, run: Run, *, as_json: bool) -> Run:
    """Print steps (again whenever one changes status) until the run ends; the final run."""
    seen: dict[int, StepStatus] = {}
    announced: set[uuid.UUID] = set()
    status = run.status
    progress = Progress(sys.stderr)
    gateway = Reconnecting(progress)
    while True:
        current = gateway.call(lambda: deck.run(run.id))
        if current.status != status and not current.status.terminal and not as_json:
            progress.clear()
            print(f"run is {current.status}", flush=True)
        status = current.status
        for step in gateway.call(lambda: list(all_steps(deck, run.id))):
            if seen.get(step.seq) == step.status:
                continue
            seen[step.seq] = step.status
            progress.clear()
            if as_json:
                print_json({"step": step}, lines=True)
            else:
                print(step_line(step), flush=True)
        if current.status is RunStatus.WAITING_APPROVAL:
            pending = gateway.call(
                lambda: deck.approvals(run_id=run.id, status=ApprovalStatus.PENDING).items
            )
            for approval in pending:
                if approval.id not in announced:
                    announced.add(approval.id)
                    progress.clear()
                    _announce(approval, as_json)
        if current.status.terminal:
            progress.clear()
            return current
        progress.tick(current, len(seen))
        time.sleep(POLL_SECONDS)
