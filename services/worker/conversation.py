"""The conversation of a run, rebuilt from its recorded steps.

The gateway's step list is the only memory a run has, so any worker can pick a run up
where another left it. A run on a thread starts with the thread's earlier runs
(`contract.transcript`), then its own input, every finished model reply, and for each
tool call it asked for, the latest step recorded for that call. Calls of the last reply
that are not settled yet (never asked about, approved, or started under an earlier
lease) are `pending`: the worker deals with them before it asks the model anything again.

Only the conversation moves itself on (`record_reply`, `take_pending`,
`record_tool_result`): the seq of the next step and the messages the model is sent must
change together, or a resumed run and a fresh one would number their steps apart.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import litellm

from services.contract.runs import StepKind, StepStatus
from services.contract.transcript import (
    history_messages,
    input_messages,
    newest_that_fit,
    settled_content,
    tool_message,
)
from services.contract.worker_api import ClaimGrant, PriorStep, PriorTurn


@dataclass(frozen=True)
class PendingCall:
    tool_call_id: str
    llm_name: str
    raw_arguments: str
    step: PriorStep | None

    @classmethod
    def of(cls, call: dict[str, Any], step: PriorStep | None = None) -> PendingCall:
        """A tool call as the model shaped it, and the step last recorded for it, if any."""
        return cls(
            tool_call_id=call["id"],
            llm_name=call["function"]["name"],
            raw_arguments=call["function"].get("arguments") or "{}",
            step=step,
        )


def final_answer_of(message: dict[str, Any]) -> str | None:
    """The run's answer, if this message is a model reply that asks for no tools."""
    if message["role"] == "assistant" and not message.get("tool_calls"):
        return str(message.get("content") or "")
    return None


def _history_sent(grant: ClaimGrant) -> list[PriorTurn]:
    """The thread's earlier runs the model is sent: all, or the newest that fit the
    agent's `history.max_tokens`, counted as LiteLLM counts them for its model."""
    limit = grant.agent.history
    if limit is None or not grant.history:
        return grant.history

    def count(messages: list[dict[str, Any]]) -> int:
        return int(litellm.token_counter(model=grant.agent.model, messages=messages))

    return newest_that_fit(grant.history, limit.max_tokens, count)


class Conversation:
    def __init__(self, grant: ClaimGrant) -> None:
        self._messages: list[dict[str, Any]] = []
        if grant.agent.system_prompt:
            self._messages.append({"role": "system", "content": grant.agent.system_prompt})
        self._messages.extend(history_messages(_history_sent(grant)))
        self._messages.extend(input_messages(grant.input, grant.messages))
        self._next_seq = max((s.seq for s in grant.steps), default=0) + 1
        latest: dict[str, PriorStep] = {}
        for step in grant.steps:
            if step.kind == StepKind.TOOL_CALL and step.tool_call_id:
                latest[step.tool_call_id] = step
        self._pending: list[PendingCall] = []
        replies = [
            s.output["message"]
            for s in grant.steps
            if s.kind == StepKind.LLM_CALL and s.status == StepStatus.COMPLETED
        ]
        for index, message in enumerate(replies):
            self._messages.append(message)
            for call in message.get("tool_calls") or []:
                recorded = latest.get(call["id"])
                if recorded is not None and recorded.status.settled:
                    self._messages.append(tool_message(call["id"], settled_content(recorded)))
                elif index == len(replies) - 1:
                    self._pending.append(PendingCall.of(call, recorded))

    @property
    def messages(self) -> list[dict[str, Any]]:
        """What the model is sent next; a copy, since only the conversation changes them."""
        return list(self._messages)

    @property
    def next_seq(self) -> int:
        """The seq the next new step gets (a pending call's recorded step keeps its own)."""
        return self._next_seq

    @property
    def pending(self) -> list[PendingCall]:
        """The calls of the last reply that are not settled yet."""
        return list(self._pending)

    @property
    def final_answer(self) -> str | None:
        """The model's answer, once its last reply asked for no tools."""
        return final_answer_of(self._messages[-1])

    def take_pending(self) -> list[PendingCall]:
        """The calls to settle before the model is asked again; none are left after."""
        taken, self._pending = self._pending, []
        return taken

    def seq_for(self, call: PendingCall) -> int:
        """The seq to ask the gateway about `call` with: its recorded step's, if it has one."""
        return call.step.seq if call.step is not None else self._next_seq

    def record_reply(self, message: dict[str, Any]) -> None:
        """The model's reply, recorded as step `next_seq`; its tool calls become pending."""
        self._messages.append(message)
        self._next_seq += 1
        self._pending = [PendingCall.of(call) for call in message.get("tool_calls") or []]

    def record_note(self) -> int:
        """The seq of a note recorded now; the model is told nothing of it."""
        seq = self._next_seq
        self._next_seq += 1
        return seq

    def record_tool_result(self, call: PendingCall, seq: int, content: str) -> None:
        """The call was settled as step `seq` (the gateway's number, which may be past the
        one asked about), and the model is told `content`."""
        self._next_seq = max(self._next_seq, seq + 1)
        self._messages.append(tool_message(call.tool_call_id, content))
