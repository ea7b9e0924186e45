"""Bodies of the public REST API (`/v1/*`), shared by the gateway and its Python clients."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema, model_validator

from services.contract.chat_input import Messages
from services.contract.moments import AwareMoment, Moment
from services.contract.policy import ApprovalSettings, PolicyDecision, PolicyRule
from services.contract.runs import Budget, ModelParams, RunStatus, StepKind, StepStatus, Usage
from services.contract.threads import HistoryLimit

AGENT_NAME = r"^[a-z0-9][a-z0-9_-]{0,62}$"
AGENT_REF = r"^[a-z0-9][a-z0-9_-]{0,62}(@[1-9][0-9]{0,8})?$"
TOOL_PATTERN = r"^[A-Za-z0-9_*?-]+\.[A-Za-z0-9_.*?-]+$|^\*$"
ToolPattern = Annotated[str, Field(pattern=TOOL_PATTERN, max_length=200)]


class ErrorDetail(BaseModel):
    code: str
    message: str
    details: Any = None


class ErrorBody(BaseModel):
    error: ErrorDetail


class AgentCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=AGENT_NAME)
    model: str = Field(min_length=1, max_length=200)
    system_prompt: str = Field(default="", max_length=100_000)
    tools: list[ToolPattern] = Field(
        default_factory=list,
        max_length=200,
        description="Tools the agent may call, as `<server>.<tool>` names or globs.",
    )
    budget: Budget = Field(default_factory=Budget)
    params: ModelParams = Field(default_factory=ModelParams)
    history: HistoryLimit | None = Field(
        default=None,
        description="On a thread, send only the newest earlier runs that fit (none: all of "
        "the newest 200).",
    )


class Agent(AgentCreate):
    version: int
    created_at: datetime


class AgentPage(BaseModel):
    items: list[Agent]
    next_cursor: str | None


class RunCreate(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        # Exactly one of the two, said so to schema readers (and to the fuzz run).
        json_schema_extra={
            "oneOf": [
                {"required": ["input"], "properties": {"input": {"type": "string"}}},
                {"required": ["messages"], "properties": {"messages": {"type": "array"}}},
            ]
        },
    )

    agent: str = Field(pattern=AGENT_REF, description="`name` (latest version) or `name@version`")
    input: str | None = Field(
        default=None,
        min_length=1,
        max_length=200_000,
        description="What the user says; or give `messages` instead.",
    )
    messages: Messages | None = Field(
        default=None,
        description="The input as chat messages (OpenAI format: text and inline images), "
        "the last one the user's; instead of `input`.",
    )
    metadata: dict[str, Any] = Field(default_factory=dict, max_length=50)
    thread_id: uuid.UUID | None = Field(
        default=None,
        description="Continue this thread (`POST /v1/threads`): the run starts from its "
        "earlier runs' inputs, replies and tool results. A thread runs one run at a time: "
        "409 `thread_busy` while another of its runs is open, unless `if_busy` says "
        "`enqueue`.",
    )
    if_busy: Literal["reject", "enqueue"] = Field(
        default="reject",
        description="On a thread with a run open: `reject` (409 `thread_busy`) or "
        "`enqueue` (the run waits, `waiting_thread`, and is queued when the runs before it "
        "on the thread have ended, in the order they were created).",
    )
    stream: bool = Field(
        default=False,
        description="Publish the model's tokens as it writes them, from the first call on, "
        "for `GET /v1/runs/{id}/stream`. Without it, tokens are published only while "
        "someone has that stream open.",
    )

    @model_validator(mode="after")
    def _one_input(self) -> RunCreate:
        if (self.input is None) == (self.messages is None):
            raise ValueError("give either input or messages")
        if self.messages is not None and self.messages[-1].role != "user":
            raise ValueError("the last of messages must be the user's")
        return self

    @property
    def text(self) -> str:
        """The input as text: what lists, searches and the audit trail show of it."""
        if self.input is not None:
            return self.input
        return "\n".join(m.text() for m in self.messages or () if m.role == "user")

    def wire_messages(self) -> list[dict[str, Any]] | None:
        return None if self.messages is None else [m.wire() for m in self.messages]


class Run(BaseModel):
    id: uuid.UUID
    agent: str
    agent_version: int
    status: RunStatus
    input: str
    messages: list[dict[str, Any]] | None = Field(
        default=None, description="The input as the chat messages it was given in, if so."
    )
    output: str | None
    error: str | None
    metadata: dict[str, Any]
    usage: Usage
    steps_count: int
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    dead_lettered_at: datetime | None = Field(
        default=None,
        description="When the run failed because its job was never finished by any worker; "
        "such a run can be queued again (`POST /v1/runs/{id}/requeue`).",
    )
    thread_id: uuid.UUID | None = Field(default=None, description="The thread it continues.")
    stream: bool = Field(
        default=False, description="Whether it was started with `stream` (tokens published)."
    )


class RunPage(BaseModel):
    items: list[Run]
    next_cursor: str | None


class RunListQuery(BaseModel):
    status: RunStatus | None = None
    agent: str | None = Field(default=None, pattern=AGENT_NAME)
    dead_lettered: bool | None = Field(
        default=None, description="Only runs that were (true) or were not (false) dead-lettered."
    )
    id_ends_with: str | None = Field(
        default=None,
        pattern=r"^[0-9a-f-]{4,36}$",
        description="Only runs whose id ends with this: the short id the deck and the CLI "
        "show is an id's last 8 characters, its random part.",
    )
    text: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        description="Only runs whose input or output holds this, in any case. A search "
        "reads at most the newest 5,000 runs (or 16 MiB of input and output) under the "
        "other filters per request: a page may hold fewer than `limit` runs, even none, "
        "with a `next_cursor` to read on.",
    )
    created_after: AwareMoment | None = Field(
        default=None, description="Only runs created at or after this moment."
    )
    created_before: AwareMoment | None = Field(
        default=None, description="Only runs created before this moment."
    )
    limit: int = Field(default=50, ge=1, le=200)
    cursor: str | None = Field(default=None, max_length=200)

    @model_validator(mode="after")
    def _a_window_has_an_end_after_its_start(self) -> RunListQuery:
        if self.created_after and self.created_before and self.created_after >= self.created_before:
            raise ValueError("created_after must be earlier than created_before")
        return self


class RunWaitQuery(BaseModel):
    wait: int = Field(
        default=0,
        ge=0,
        le=60,
        description="Seconds to wait for the run to finish or park for an approval before "
        "answering (the gateway may allow less: `run_wait_max_seconds`).",
    )


class RunSummaryQuery(BaseModel):
    minutes: int = Field(default=15, ge=1, le=1440, description="The window's length.")
    until: Moment | None = Field(
        default=None,
        description="The window's end, from 1970-01-02 to 9999-12-31 (run ids count time "
        "from 1970); now if unset.",
    )


class AgentSummary(BaseModel):
    agent: str
    started: int
    completed: int
    failed: int
    cost_usd: float


class RunSummary(BaseModel):
    """What the project's runs did, counted by the database: `open` is every run open now,
    whatever its age; the rest is of the runs created in the window (`since` on)."""

    window_minutes: int
    since: datetime
    until: datetime
    open: dict[str, int]
    started: int
    by_status: dict[str, int]
    completed: int
    total_tokens: int
    cost_usd: float
    unpriced: int = Field(description="Runs in the window whose cost is unknown.")
    dead_lettered: int = Field(
        default=0,
        description="Runs in the window failed because their job never finished (the ones "
        "an operator may queue again).",
    )
    refused: int = Field(
        default=0,
        description="Runs the project was refused (429: backlog or quota) in the window's "
        "minutes the gateway still keeps (the last hour): `refused_minutes` of them, from "
        "`refused_since`.",
    )
    refused_minutes: int = 0
    refused_since: datetime | None = None
    agents: list[AgentSummary]


class PageQuery(BaseModel):
    limit: int = Field(default=50, ge=1, le=200)
    cursor: str | None = Field(default=None, max_length=200)


class StepDecision(PolicyDecision):
    """The policy decision on a tool call step and, for a call that waited for a human,
    how that approval ended, by whom and why."""

    approved_by: str | None = None
    approval_status: ApprovalStatus | None = Field(
        default=None, description="How the approval the call waited for ended."
    )
    decided_by: str | None = Field(
        default=None,
        description="Who decided it: a key's name, `approval-expiry`, or `system` (cancelled).",
    )
    reason: str | None = Field(default=None, description="The decision's reason.")


class Step(BaseModel):
    seq: int
    kind: StepKind
    status: StepStatus
    model: str | None
    tool: str | None
    input: Any
    output: Any
    error: str | None
    usage: Usage | None
    decision: StepDecision | None = None
    # the worker (its label) that started a tool call: whose calls a dead worker left
    worker: str | None = None
    started_at: datetime
    finished_at: datetime | None


class StepPage(BaseModel):
    items: list[Step]
    next_cursor: str | None


class ApprovalStatus(StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"
    EXPIRED = "expired"
    CANCELLED = "cancelled"


class Approval(BaseModel):
    id: uuid.UUID
    run_id: uuid.UUID
    step_seq: int
    agent: str
    tool: str
    arguments: dict[str, Any]
    rule: str | None
    policy_version: int | None
    explanation: str
    status: ApprovalStatus
    reason: str | None
    decided_by: str | None
    expires_at: datetime | None
    created_at: datetime
    decided_at: datetime | None


class ApprovalPage(BaseModel):
    items: list[Approval]
    next_cursor: str | None


class ApprovalListQuery(BaseModel):
    status: ApprovalStatus | None = None
    run_id: uuid.UUID | None = None
    limit: int = Field(default=50, ge=1, le=200)
    cursor: str | None = Field(default=None, max_length=200)


class ApprovalDecision(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field(min_length=1, max_length=2000)


MAX_BULK_DECISIONS = 200


class BulkApprovalDecision(BaseModel):
    """One decision, with one reason, on several pending approvals at once."""

    model_config = ConfigDict(extra="forbid")

    approval_ids: list[uuid.UUID] = Field(min_length=1, max_length=MAX_BULK_DECISIONS)
    approve: bool
    reason: str = Field(min_length=1, max_length=2000)


class DecidedApprovals(BaseModel):
    items: list[Approval]


class PolicyVersionOut(BaseModel):
    version: int
    rules: list[PolicyRule]
    approvals: ApprovalSettings = Field(default_factory=ApprovalSettings)
    created_by: str
    created_at: datetime


class PolicyVersionWritten(PolicyVersionOut):
    """The answer to `PUT /v1/policies`: the new version, in force, and what looks wrong."""

    warnings: list[str] = Field(
        default_factory=list,
        description="Argument conditions that cannot hold for any known tool the rule "
        "covers, judged by the tools' declared inputSchema: a test of another type than "
        "the argument's, or an argument the schema does not declare.",
    )


class PolicyPruneQuery(BaseModel):
    before: int = Field(
        ge=1, le=2**31 - 1, description="Prune versions older than this one (not itself)."
    )


class PolicyPruned(BaseModel):
    pruned: list[int] = Field(description="Versions removed, oldest first.")
    kept: list[int] = Field(
        description="Versions before `before` kept: a recorded decision or an approval "
        "names them, they are in force, or they were replaced too recently to be sure no "
        "decision under them is still being written."
    )


class PolicyState(BaseModel):
    """The policy in force (version 0 and no rules: nothing is allowed) and its history."""

    version: int
    rules: list[PolicyRule]
    approvals: ApprovalSettings = Field(default_factory=ApprovalSettings)
    history: list[PolicyVersionOut]
    next_cursor: str | None


class ToolEntry(BaseModel):
    name: str
    server: str
    tool: str
    description: str
    input_schema: dict[str, Any]
    idempotent: bool
    shared: bool = Field(
        description="Offered to every project. False: its server is limited to some "
        "projects, yours among them (which others is not shown)."
    )
    workers: list[str] | None = Field(
        default=None,
        description="The labels of the workers reporting it so; null unless the operator "
        "shows the platform view (FERRUMDECK_PLATFORM_VIEW).",
    )
    keys: list[str] | None = Field(
        default=None,
        description="The names of the worker keys those reports came with (a listing is "
        "the reporting key's, so a tool described differently by another key is listed "
        "apart); null unless the operator shows the platform view.",
    )


class ToolCatalogue(BaseModel):
    items: list[ToolEntry]


class Role(StrEnum):
    """What a key may do; see docs/architecture.md. Worker keys serve the data plane."""

    ADMIN = "admin"
    OPERATOR = "operator"
    INTEGRATION = "integration"
    VIEWER = "viewer"
    WORKER = "worker"


class KeyInfo(BaseModel):
    id: uuid.UUID
    name: str
    role: Role
    project: str | None
    created_at: datetime
    revoked_at: datetime | None


class KeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=100)
    # Worker keys are made from the server's shell (400 `bad_role`), so the schema offers
    # only the roles this endpoint creates.
    role: Annotated[
        Role,
        WithJsonSchema({"type": "string", "enum": [r.value for r in Role if r != Role.WORKER]}),
    ] = Field(description="admin, operator, integration or viewer")


class KeyCreated(KeyInfo):
    secret: str = Field(description="Shown only now; only its hash is stored.")


class KeyPage(BaseModel):
    items: list[KeyInfo]
    next_cursor: str | None
