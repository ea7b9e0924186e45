"""The conversation of a run, rebuilt from its recorded steps.

The gateway's step list is the only memory a run has, so any worker can pick a run up
where another left it: every finished model reply, and for each tool call it asked for,
the latest step recorded for that call. Calls of the last reply that are not settled yet
(never asked about, approved, or started under an earlier lease) are `pending`: the
worker deals with them before it asks the model anything again.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from services.contract.runs import StepKind, StepStatus
from services.contract.worker_api import ClaimGrant, PriorStep


@dataclass(frozen=True)
class PendingCall:
    tool_call_id: str
    llm_name: str
    raw_arguments: str
    step: PriorStep | None


def tool_message(tool_call_id: str, content: str) -> dict[str, Any]:
    return {"role": "tool", "tool_call_id": tool_call_id, "content": content}


def final_answer_of(message: dict[str, Any]) -> str | None:
    """The run's answer, if this message is a model reply that asks for no tools."""
    if message["role"] == "assistant" and not message.get("tool_calls"):
        return str(message.get("content") or "")
    return None


def settled_content(step: PriorStep) -> str:
    """What the model is told about a settled tool call."""
    if step.status == StepStatus.COMPLETED:
        output = step.output
        return output if isinstance(output, str) else json.dumps(output)
    if step.status == StepStatus.FAILED:
        return f"error: {step.error or step.output}"
    return str(step.output)


class Conversation:
    def __init__(self, grant: ClaimGrant) -> None:
        self.messages: list[dict[str, Any]] = []
        if grant.agent.system_prompt:
            self.messages.append({"role": "system", "content": grant.agent.system_prompt})
        self.messages.append({"role": "user", "content": grant.input})
        self.next_seq = max((s.seq for s in grant.steps), default=0) + 1
        latest: dict[str, PriorStep] = {}
        for step in grant.steps:
            if step.kind == StepKind.TOOL_CALL and step.tool_call_id:
                latest[step.tool_call_id] = step
        self.pending: list[PendingCall] = []
        replies = [
            s.output["message"]
            for s in grant.steps
            if s.kind == StepKind.LLM_CALL and s.status == StepStatus.COMPLETED
        ]
        for index, message in enumerate(replies):
            self.messages.append(message)
            for call in message.get("tool_calls") or []:
                recorded = latest.get(call["id"])
                if recorded is not None and recorded.status.settled:
                    self.messages.append(tool_message(call["id"], settled_content(recorded)))
                elif index == len(replies) - 1:
                    self.pending.append(
                        PendingCall(
                            tool_call_id=call["id"],
                            llm_name=call["function"]["name"],
                            raw_arguments=call["function"].get("arguments") or "{}",
                            step=recorded,
                        )
                    )

    @property
    def final_answer(self) -> str | None:
        """The model's answer, once its last reply asked for no tools."""
        return final_answer_of(self.messages[-1])
