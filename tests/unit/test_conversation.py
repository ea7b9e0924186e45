from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from services.contract.budget import Spent
from services.contract.runs import Budget, ModelParams, RunStatus, StepKind, StepStatus, Usage
from services.contract.threads import HistoryLimit
from services.contract.worker_api import AgentSpec, ClaimGrant, PriorStep, PriorTurn
from services.worker.conversation import Conversation


def _grant(steps: list[PriorStep], system_prompt: str = "Be brief.") -> ClaimGrant:
    now = datetime.now(UTC)
    return ClaimGrant(
        run_id=uuid.uuid4(),
        project="default",
        epoch=1,
        lease_token="t" * 43,
        lease_expires_at=now,
        agent=AgentSpec(
            name="a",
            version=1,
            model="openai/x",
            system_prompt=system_prompt,
            tools=["time.*"],
            budget=Budget(),
            params=ModelParams(),
        ),
        input="Hello",
        steps=steps,
        spent=Spent(usage=Usage(), elapsed_seconds=0.0),
        started_at=now,
    )


def _reply(seq: int, content: str | None, *call_ids: str) -> PriorStep:
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if call_ids:
        message["tool_calls"] = [
            {"id": c, "type": "function", "function": {"name": "time__now", "arguments": "{}"}}
            for c in call_ids
        ]
    return PriorStep(
        seq=seq, kind=StepKind.LLM_CALL, status=StepStatus.COMPLETED, output={"message": message}
    )


def _tool(seq: int, call_id: str, status: StepStatus, output: Any = None) -> PriorStep:
    return PriorStep(
        seq=seq,
        kind=StepKind.TOOL_CALL,
        status=status,
        tool="time.now",
        tool_call_id=call_id,
        output=output,
    )


def test_a_new_run_starts_with_system_prompt_and_input() -> None:
    conversation = Conversation(_grant([]))
    assert conversation.messages == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hello"},
    ]
    assert (conversation.next_seq, conversation.pending, conversation.final_answer) == (1, [], None)


def test_no_system_prompt_no_system_message() -> None:
    assert Conversation(_grant([], system_prompt="")).messages == [
        {"role": "user", "content": "Hello"}
    ]


def test_settled_tool_calls_become_tool_messages_in_call_order() -> None:
    steps = [
        _reply(1, None, "a", "b"),
        _tool(2, "a", StepStatus.COMPLETED, "12:00"),
        _tool(3, "b", StepStatus.DENIED, "denied by policy: no"),
        _reply(4, "It is noon."),
    ]
    conversation = Conversation(_grant(steps))
    assert [m["role"] for m in conversation.messages] == [
        "system",
        "user",
        "assistant",
        "tool",
        "tool",
        "assistant",
    ]
    assert conversation.messages[3] == {"role": "tool", "tool_call_id": "a", "content": "12:00"}
    assert conversation.messages[4]["content"] == "denied by policy: no"
    assert conversation.final_answer == "It is noon."
    assert conversation.next_seq == 5


def test_unsettled_calls_of_the_last_reply_are_pending() -> None:
    steps = [
        _reply(1, None, "a", "b", "c"),
        _tool(2, "a", StepStatus.COMPLETED, "done"),
        _tool(3, "b", StepStatus.APPROVED),
    ]
    conversation = Conversation(_grant(steps))
    assert [p.tool_call_id for p in conversation.pending] == ["b", "c"]
    assert conversation.pending[0].step is not None
    assert conversation.pending[0].step.seq == 3
    assert conversation.pending[1].step is None
    assert conversation.final_answer is None
    assert conversation.next_seq == 4


def test_the_latest_step_of_a_retried_call_decides() -> None:
    steps = [
        _reply(1, None, "a"),
        _tool(2, "a", StepStatus.OUTCOME_UNKNOWN),
        _tool(3, "a", StepStatus.REJECTED, "approval rejected by ops: no"),
    ]
    conversation = Conversation(_grant(steps))
    assert conversation.pending == []
    assert conversation.messages[-1]["content"] == "approval rejected by ops: no"


def test_a_failed_model_call_is_not_replayed() -> None:
    failed = PriorStep(seq=1, kind=StepKind.LLM_CALL, status=StepStatus.FAILED)
    assert len(Conversation(_grant([failed])).messages) == 2


def _turn(question: str, answer: str, *call_ids: str) -> PriorTurn:
    steps = [_reply(1, None if call_ids else answer, *call_ids)]
    for n, call_id in enumerate(call_ids, start=2):
        steps.append(
            PriorStep(
                seq=n,
                kind=StepKind.TOOL_CALL,
                status=StepStatus.COMPLETED,
                tool="time.now",
                tool_call_id=call_id,
                output=answer,
            )
        )
    return PriorTurn(run_id=uuid.uuid4(), status=RunStatus.COMPLETED, input=question, steps=steps)


def test_a_thread_history_comes_first_and_whole_turns_are_dropped_oldest_first() -> None:
    old = _turn("word " * 400, "a long answer " * 400)
    recent = _turn("What time is it?", "noon", "c1")
    grant = _grant([])
    everything = Conversation(grant.model_copy(update={"history": [old, recent]})).messages
    assert [m["role"] for m in everything] == [
        "system",
        "user",
        "assistant",
        "user",
        "assistant",
        "tool",
        "user",
    ]
    limited = grant.model_copy(
        update={
            "history": [old, recent],
            "agent": grant.agent.model_copy(update={"history": HistoryLimit(max_tokens=200)}),
        }
    )
    kept = Conversation(limited).messages
    assert [m["role"] for m in kept] == ["system", "user", "assistant", "tool", "user"]
    assert kept[1]["content"] == "What time is it?"
    assert (kept[3]["tool_call_id"], kept[3]["content"]) == ("c1", "noon")
    assert kept[-1]["content"] == "Hello"
    tiny = limited.model_copy(
        update={"agent": grant.agent.model_copy(update={"history": HistoryLimit(max_tokens=1)})}
    )
    assert [m["role"] for m in Conversation(tiny).messages] == ["system", "user"]
