"""Tool calls made again after their transport failed, but only calls that may run twice.

A failure on the way to the server (unavailable, connection lost mid-call, no answer in
time) says nothing about whether the tool ran: a call lost mid-way may well have done
its work. Running an idempotent tool again is harmless by its own declaration (MCP
`readOnlyHint` / `idempotentHint`, the same judgement crash recovery relies on), so those
are retried with backoff within the run's time budget; any other call is made at most
once, and its failure goes to the model as it is. A tool's own error is its answer and
is never retried.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from services.worker.mcp_router import Caller, McpRouter, ToolOutcome
from services.worker.retry import Backoff


async def call_tool(
    tools: McpRouter,
    name: str,
    arguments: Mapping[str, Any],
    *,
    idempotent: bool,
    backoff: Backoff,
    deadline: float | None,
    caller: Caller | None = None,
) -> ToolOutcome:
    """The outcome of the first attempt that got through, or of the last one made.
    `deadline` is on the `time.monotonic` clock."""
    attempt = 0
    started = time.monotonic()
    while True:
        outcome = await tools.call(name, arguments, caller)
        if outcome.ok or not outcome.transient or not idempotent:
            return _told_attempts(outcome, attempt + 1, started)
        attempt += 1
        if not await backoff.wait(attempt, kind="tool", deadline=deadline, failure=outcome.content):
            return _told_attempts(outcome, attempt, started)


def _told_attempts(outcome: ToolOutcome, attempts: int, started: float) -> ToolOutcome:
    """A call that failed after being made more than once says so: a timeout repeated
    three times (the tool's own work started anew each time) must not read as one."""
    if outcome.ok or attempts == 1:
        return outcome
    spent = time.monotonic() - started
    return replace(outcome, content=f"{outcome.content} (after {attempts} attempts, {spent:.0f}s)")
