"""Bodies of the worker callback API (`/v1/worker/*`).

Every callback after the claim carries the lease `epoch` it was granted. The gateway
refuses (409) any callback whose epoch is not the run's current one, which is what makes a
duplicate job message or a worker that lost its lease harmless.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from services.contract.runs import Budget, ModelParams, StepKind, StepStatus, Usage

JsonValue = Any


class ClaimRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    worker_id: str = Field(min_length=1, max_length=200)


class AgentSpec(BaseModel):
    """The immutable agent version a run executes."""

    name: str
    version: int
    model: str
    system_prompt: str
    tools: list[str]
    budget: Budget
    params: ModelParams


class PriorStep(BaseModel):
    """A step recorded before this claim, from which the worker rebuilds the conversation."""

    seq: int
    kind: StepKind
    status: StepStatus
    output: JsonValue = None


class ClaimGrant(BaseModel):
    run_id: uuid.UUID
    epoch: int
    lease_expires_at: datetime
    agent: AgentSpec
    input: str
    steps: list[PriorStep]
    usage: Usage
    started_at: datetime


class EpochBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    epoch: int = Field(ge=1)


class LeaseInfo(BaseModel):
    lease_expires_at: datetime


class StepReport(BaseModel):
    """One step, reported when it starts (status `started`) or when it ends.

    Reporting the same `seq` again is idempotent: a finished step is never recorded twice,
    and a `started` step is replaced by its outcome.
    """

    model_config = ConfigDict(extra="forbid")

    epoch: int = Field(ge=1)
    seq: int = Field(ge=1)
    kind: StepKind
    status: StepStatus
    model: str | None = Field(default=None, max_length=200)
    tool: str | None = Field(default=None, max_length=200)
    input: JsonValue = None
    output: JsonValue = None
    error: str | None = Field(default=None, max_length=10_000)
    usage: Usage | None = None
    started_at: datetime
    finished_at: datetime | None = None


class StepAck(BaseModel):
    seq: int
    status: StepStatus
    replayed: bool
    lease_expires_at: datetime


class CompleteReport(BaseModel):
    model_config = ConfigDict(extra="forbid")

    epoch: int = Field(ge=1)
    output: str = Field(max_length=1_000_000)


class FailReport(BaseModel):
    model_config = ConfigDict(extra="forbid")

    epoch: int = Field(ge=1)
    status: Literal["failed", "budget_exceeded"] = "failed"
    error: str = Field(min_length=1, max_length=10_000)
