"""Bodies of the worker callback API (`/v1/worker/*`).

Every callback after the claim presents the lease it was granted (`LeaseBody`): the
`epoch` and the `lease_token`. The gateway refuses (409) any callback whose epoch is not
the run's current one, which is what makes a duplicate job message or a worker that lost
its lease harmless, and any whose token is not the one this claim returned, which is
what makes a worker key shared by a fleet (or stolen from it) no master key: a lease is
usable only by the process that claimed it.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from services.contract.budget import Spent
from services.contract.policy import PolicyDecision
from services.contract.runs import Budget, ModelParams, RunStatus, StepKind, StepStatus, Usage
from services.contract.threads import HistoryLimit
from services.contract.tools import ToolSpec

JsonValue = Any


class ClaimRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    worker_id: str = Field(min_length=1, max_length=200)


LEASE_TOKEN_CHARS = 43
"""A lease token: 32 random bytes, base64url without padding."""


class AgentSpec(BaseModel):
    """The immutable agent version a run executes."""

    name: str
    version: int
    model: str
    system_prompt: str
    tools: list[str]
    budget: Budget
    params: ModelParams
    history: HistoryLimit | None = None


class PriorStep(BaseModel):
    """A step recorded before this claim, from which the worker rebuilds the conversation."""

    seq: int
    kind: StepKind
    status: StepStatus
    tool: str | None = None
    tool_call_id: str | None = None
    input: JsonValue = None
    output: JsonValue = None
    error: str | None = None
    idempotent: bool | None = None


class PriorTurn(BaseModel):
    """An earlier run of the run's thread, oldest first: what the model is told first."""

    run_id: uuid.UUID
    status: RunStatus
    input: str
    messages: list[dict[str, Any]] | None = None
    steps: list[PriorStep]


class ClaimGrant(BaseModel):
    """The run, handed to the worker that now holds its lease, with what it has spent:
    the worker checks the budget itself before each model call (`contract.budget`)."""

    run_id: uuid.UUID
    project: str
    """The run's project: the worker offers it only the tools offered to that project."""
    epoch: int
    lease_token: str = Field(repr=False)
    """Presented with every later callback of this lease; known only to this claim."""
    lease_expires_at: datetime
    agent: AgentSpec
    input: str
    messages: list[dict[str, Any]] | None = Field(
        default=None, description="The input as chat messages, when it was given so."
    )
    steps: list[PriorStep]
    spent: Spent
    started_at: datetime
    history: list[PriorTurn] = Field(
        default_factory=list,
        description="The thread's earlier runs, oldest first (none for a run on no thread).",
    )
    stream: bool = Field(
        default=False,
        description="Publish every model call's tokens (`POST /v1/runs` `stream`), not only "
        "while someone follows the run.",
    )

    @property
    def lease(self) -> LeaseBody:
        return LeaseBody(epoch=self.epoch, lease_token=self.lease_token)


class LeaseBody(BaseModel):
    """The lease a callback acts under; alone, the body of a heartbeat."""

    model_config = ConfigDict(extra="forbid")

    epoch: int = Field(ge=1)
    lease_token: str = Field(min_length=LEASE_TOKEN_CHARS, max_length=LEASE_TOKEN_CHARS, repr=False)


class LeaseInfo(BaseModel):
    lease_expires_at: datetime


WORKER_STEP_KINDS = frozenset({StepKind.LLM_CALL, StepKind.TOOL_CALL, StepKind.NOTE})


class MissingTool(BaseModel):
    """One of the agent's `tools` patterns that no tool offered to the run matched.
    `server_unavailable`: a server of that name is configured on the worker but was not
    connected when the run was claimed; `no_such_tool`: the server is there and lists no
    such tool; `not_on_this_worker`: the worker has no such server for the run's project
    (a server limited to other projects is reported so too: never named)."""

    model_config = ConfigDict(extra="forbid")

    pattern: str = Field(min_length=1, max_length=200)
    reason: Literal["server_unavailable", "no_such_tool", "not_on_this_worker"]


class ToolsMissing(BaseModel):
    """The only note a worker writes: which of the agent's tools its run was not offered,
    and why, in these fixed terms. A worker may not write free text into a run's record:
    a note saying "approved by alice" would read like a decision nobody made."""

    model_config = ConfigDict(extra="forbid")

    tools_missing: list[MissingTool] = Field(min_length=1, max_length=200)


class StepReport(LeaseBody):
    """One step, reported when it starts (status `started`) or when it ends.

    Reporting the same `seq` again is idempotent: a finished step is never recorded twice,
    and a `started` step is replaced by its outcome.

    A model call whose reply asks for no tool is the run's answer: reported with
    `final_output`, the step is recorded and the run completed in one transaction. The
    same report replayed (its answer lost) is acknowledged as `replayed`.
    """

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
    final_output: str | None = Field(default=None, max_length=1_000_000)

    @field_validator("kind")
    @classmethod
    def _kind_a_worker_makes(cls, kind: StepKind) -> StepKind:
        """Workers report the calls they make, and notes of the tools a run was not
        offered (`ToolsMissing`); approval steps are written by the gateway when a human
        decides, so a worker claiming one would forge a decision."""
        if kind not in WORKER_STEP_KINDS:
            raise ValueError(f"a worker reports only {', '.join(sorted(WORKER_STEP_KINDS))} steps")
        return kind

    @model_validator(mode="after")
    def _a_note_says_only_which_tools_are_missing(self) -> StepReport:
        if self.kind != StepKind.NOTE:
            return self
        if self.status != StepStatus.COMPLETED or any(
            value is not None
            for value in (self.model, self.tool, self.input, self.error, self.usage)
        ):
            raise ValueError("a note is completed and carries only its output")
        self.output = ToolsMissing.model_validate(self.output).model_dump(mode="json")
        return self

    @model_validator(mode="after")
    def _final_only_for_a_completed_model_call(self) -> StepReport:
        if self.final_output is not None and (
            self.kind != StepKind.LLM_CALL or self.status != StepStatus.COMPLETED
        ):
            raise ValueError("final_output is only for a completed llm_call step")
        return self


class StepAck(BaseModel):
    """The step as recorded, and what the run has spent with it. `lease_expires_at` is
    None once the run has ended (a final step completes it)."""

    seq: int
    status: StepStatus
    replayed: bool
    lease_expires_at: datetime | None
    spent: Spent


class CompleteReport(LeaseBody):
    """Completes a run whose last recorded step already is its answer: a run resumed by
    another lease. A fresh answer completes the run with its step (`final_output`)."""

    output: str = Field(max_length=1_000_000)


class FailReport(LeaseBody):
    status: Literal["failed", "budget_exceeded"] = "failed"
    error: str = Field(min_length=1, max_length=10_000)


class ToolAuthorization(LeaseBody):
    """Asked before each tool call; the gateway decides by policy and records the step.

    `arguments` are the call's arguments normalised against the tool's `inputSchema` by
    the worker (`services/worker/tool_arguments.py`): what the tool will receive, and so
    what policy decides on. When they do not fit the schema, `invalid_arguments` says
    where and why (never a value) and `arguments` are what the model sent: the gateway
    records the call refused, without asking policy or a human."""

    seq: int = Field(ge=1)
    tool: str = Field(min_length=3, max_length=200)
    tool_call_id: str = Field(min_length=1, max_length=200)
    arguments: dict[str, JsonValue] = Field(default_factory=dict)
    idempotent: bool = False
    invalid_arguments: str | None = Field(default=None, min_length=1, max_length=1000)


class ToolVerdict(BaseModel):
    """`execute`: call it now and report the step. `denied`: tell the model. `parked`:
    a human must decide; stop working on the run (it is re-queued after the decision)."""

    verdict: Literal["execute", "denied", "parked"]
    seq: int
    decision: PolicyDecision
    approval_id: uuid.UUID | None = None


class CatalogueReport(BaseModel):
    model_config = ConfigDict(extra="forbid")

    worker_id: str = Field(min_length=1, max_length=200)
    tools: list[ToolSpec] = Field(max_length=5000)


class ReleaseReport(LeaseBody):
    """A worker shutting down hands a run back: the lease is dropped and the run queued
    again at once, so another worker continues it from its recorded steps."""

    reason: str = Field(default="worker shutting down", min_length=1, max_length=1000)


class DeadLetterReport(BaseModel):
    """A job was delivered `deliveries` times and never finished: the worker asks the
    gateway to fail its run, unless a live lease shows someone is still working on it.

    Nobody holds a lease on a poison run, so the evidence is the job itself: `entry_id`
    names its entry in the runs stream, which the gateway reads to see that it is this
    run's job and pending, delivered more than `max_deliveries` times."""

    model_config = ConfigDict(extra="forbid")

    entry_id: str = Field(pattern=r"^[0-9]{1,20}-[0-9]{1,20}$")

    worker_id: str = Field(min_length=1, max_length=200)
    deliveries: int = Field(ge=1)
    reason: str = Field(min_length=1, max_length=1000)
