"""Run and step vocabulary shared by the API, the worker callbacks and the database."""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field


class RunStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    WAITING_APPROVAL = "waiting_approval"
    WAITING_THREAD = "waiting_thread"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    BUDGET_EXCEEDED = "budget_exceeded"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_STATUSES


TERMINAL_STATUSES = frozenset(
    {RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED, RunStatus.BUDGET_EXCEEDED}
)


class StepKind(StrEnum):
    LLM_CALL = "llm_call"
    TOOL_CALL = "tool_call"
    APPROVAL = "approval"
    NOTE = "note"


class StepStatus(StrEnum):
    """Where a step stands. A tool call goes `started → completed | failed`, or is
    `denied` by policy, or waits (`waiting_approval`) for a human who `approved` or
    `rejected` it, or nobody did in time (`expired`); `outcome_unknown` marks a call whose
    worker died mid-call."""

    STARTED = "started"
    COMPLETED = "completed"
    FAILED = "failed"
    DENIED = "denied"
    WAITING_APPROVAL = "waiting_approval"
    APPROVED = "approved"
    REJECTED = "rejected"
    EXPIRED = "expired"
    OUTCOME_UNKNOWN = "outcome_unknown"

    @property
    def settled(self) -> bool:
        """The model can be told how this step ended."""
        return self in SETTLED_STEP_STATUSES


SETTLED_STEP_STATUSES = frozenset(
    {
        StepStatus.COMPLETED,
        StepStatus.FAILED,
        StepStatus.DENIED,
        StepStatus.REJECTED,
        StepStatus.EXPIRED,
    }
)


class Usage(BaseModel):
    """Token counts and cost; `cost_usd` is None when the model has no known price (and,
    for a run, until its first model call is counted: `run_cost`)."""

    model_config = ConfigDict(extra="forbid")

    prompt_tokens: int = Field(default=0, ge=0)
    completion_tokens: int = Field(default=0, ge=0)
    total_tokens: int = Field(default=0, ge=0)
    cost_usd: float | None = Field(default=None, ge=0)


def run_cost(cost: float | None, prompt_tokens: int, completion_tokens: int) -> float | None:
    """A run's `cost_usd` as the API shows it: None while no model call is counted yet
    (a queued run has not cost $0, nothing is priced yet) and when a call had no known
    price. Never a silent 0 that later turns out unknown."""
    if prompt_tokens + completion_tokens == 0:
        return None
    return cost


class Budget(BaseModel):
    """Limits on one run. Steps are always bounded; the others only when set."""

    model_config = ConfigDict(extra="forbid")

    max_steps: int = Field(default=20, ge=1, le=1000)
    max_tokens: int | None = Field(default=None, ge=1)
    max_cost_usd: float | None = Field(default=None, gt=0)
    max_seconds: float | None = Field(default=None, gt=0)


class ModelParams(BaseModel):
    """Sampling parameters an agent may set.

    An allow-list on purpose: LiteLLM also accepts `api_base`, `api_key` and friends as
    keyword arguments, and API callers must never be able to point workers at a URL.
    """

    model_config = ConfigDict(extra="forbid")

    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    max_tokens: int | None = Field(default=None, ge=1, le=1_000_000)
    seed: int | None = None
    stop: list[str] | None = Field(default=None, max_length=4)
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)
