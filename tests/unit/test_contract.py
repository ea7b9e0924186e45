from __future__ import annotations

import uuid

import pytest
from pydantic import ValidationError

from services.contract.api import AgentCreate, RunCreate
from services.contract.jobs import JobMessage, JobReason, StreamNames
from services.contract.runs import RunStatus


def test_job_message_round_trips_through_stream_fields() -> None:
    job = JobMessage(run_id=uuid.uuid4(), reason=JobReason.CREATED)
    raw = {k.encode(): v.encode() for k, v in job.to_fields().items()}
    assert JobMessage.from_fields(raw) == job


def test_job_message_rejects_garbage() -> None:
    with pytest.raises(ValidationError):
        JobMessage.from_fields({b"run_id": b"nope", b"reason": b"created"})


def test_stream_names_share_one_prefix() -> None:
    names = StreamNames("fd:test")
    assert names.runs == "fd:test:runs"
    assert names.group.startswith("fd:test:")


def test_terminal_statuses() -> None:
    assert RunStatus.CANCELLED.terminal
    assert not RunStatus.WAITING_APPROVAL.terminal


def test_agent_params_cannot_carry_endpoints() -> None:
    with pytest.raises(ValidationError, match="api_base"):
        AgentCreate.model_validate(
            {"name": "a", "model": "openai/x", "params": {"api_base": "http://evil"}}
        )


@pytest.mark.parametrize("tool", ["time", "time.get.now!", "", "x" * 300])
def test_agent_tool_patterns_are_checked(tool: str) -> None:
    with pytest.raises(ValidationError):
        AgentCreate(name="a", model="openai/x", tools=[tool])


@pytest.mark.parametrize("agent", ["demo", "demo@3"])
def test_run_agent_reference(agent: str) -> None:
    assert RunCreate(agent=agent, input="hi").agent == agent


@pytest.mark.parametrize("agent", ["demo@0", "demo@x", "Demo", "demo@"])
def test_bad_agent_reference(agent: str) -> None:
    with pytest.raises(ValidationError):
        RunCreate(agent=agent, input="hi")
