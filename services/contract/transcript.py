"""The chat messages a finished run leaves in its thread, from its input and steps.

Both planes need them: the worker sends them to the model ahead of a new run's input,
the gateway lists them (`GET /v1/threads/{id}/messages`). They are the user's input,
then each completed model reply, each followed by what the model was told of every tool
call it asked for. A call that never settled (its run was cancelled, failed or ran out
of budget first) is answered with why, since chat APIs refuse a tool call left without
a reply.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

from services.contract.runs import RunStatus, StepKind, StepStatus
from services.contract.worker_api import PriorStep, PriorTurn


def settled_content(step: PriorStep) -> str:
    """What the model is told about a settled tool call."""
    if step.status == StepStatus.COMPLETED:
        output = step.output
        return output if isinstance(output, str) else json.dumps(output)
    if step.status == StepStatus.FAILED:
        return f"error: {step.error or step.output}"
    return str(step.output)


def tool_message(tool_call_id: str, content: str) -> dict[str, Any]:
    return {"role": "tool", "tool_call_id": tool_call_id, "content": content}


def input_messages(input: str, messages: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    """What the caller said: its chat messages, or its text as one user message."""
    return list(messages) if messages else [{"role": "user", "content": input}]


def turn_messages(
    input: str,
    status: RunStatus,
    steps: Sequence[PriorStep],
    messages: list[dict[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    latest: dict[str, PriorStep] = {}
    for step in steps:
        if step.kind == StepKind.TOOL_CALL and step.tool_call_id:
            latest[step.tool_call_id] = step
    said = input_messages(input, messages)
    for step in steps:
        if step.kind != StepKind.LLM_CALL or step.status != StepStatus.COMPLETED:
            continue
        if not isinstance(step.output, dict) or not isinstance(step.output.get("message"), dict):
            continue
        message: dict[str, Any] = step.output["message"]
        said.append(message)
        for call in message.get("tool_calls") or []:
            recorded = latest.get(call["id"])
            if recorded is not None and recorded.status.settled:
                said.append(tool_message(call["id"], settled_content(recorded)))
            else:
                said.append(tool_message(call["id"], f"not run: the run was {status.value}"))
    return said


def newest_that_fit(
    history: Sequence[PriorTurn], max_tokens: int, count: Callable[[list[dict[str, Any]]], int]
) -> list[PriorTurn]:
    """The newest turns whose messages total at most `max_tokens`, oldest first. Whole
    turns only, so no tool call is sent without its result."""
    kept: list[PriorTurn] = []
    total = 0
    for turn in reversed(history):
        total += count(turn_messages(turn.input, turn.status, turn.steps, turn.messages))
        if total > max_tokens:
            break
        kept.append(turn)
    return kept[::-1]


def history_messages(history: Sequence[PriorTurn]) -> list[dict[str, Any]]:
    return [
        m
        for turn in history
        for m in turn_messages(turn.input, turn.status, turn.steps, turn.messages)
    ]
