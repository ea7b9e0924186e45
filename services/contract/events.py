"""The live feed's vocabulary (`GET /v1/events`): event names and what each carries.

Shared by everything that speaks it: the gateway's triggers (migrations 0003/0004, whose
`json_build_object` keys a test checks against these models), its event hub and SSE
route, the Python client, and the deck. Events carry ids and states, never inputs or
outputs: a client fetches those through the rest of the API. A run's event carries all a
list row shows (migration 0014), so a list follows the feed without a fetch per event.
Unknown keys are ignored, so a newer gateway may add some without breaking an older
deck; keys an older gateway does not send have defaults (`created_at` None).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from services.contract.api import ApprovalStatus
from services.contract.queue import QueueStats
from services.contract.runs import RunStatus, StepKind, StepStatus, run_cost


class EventName(StrEnum):
    READY = "ready"  # the first event of every connection: refetch what you show
    RUN = "run"
    STEP = "step"
    APPROVAL = "approval"
    QUEUE = "queue"  # the runs stream's statistics, once a second while anyone watches
    RESYNC = "resync"  # events were dropped (a slow client, a lost listener): refetch


class _Change(BaseModel):
    model_config = ConfigDict(frozen=True)

    project: str
    run_id: uuid.UUID


class RunChanged(_Change):
    agent: str
    status: RunStatus
    steps: int
    agent_version: int | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float | None = None  # None: no model call counted yet, or one unpriced
    created_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None

    @model_validator(mode="before")
    @classmethod
    def _no_silent_zero(cls, data: Any) -> Any:
        """The trigger sends the column, 0 until a model call is counted; the feed says
        what the API says (`run_cost`)."""
        if isinstance(data, dict) and "cost_usd" in data:
            tokens = (data.get("prompt_tokens") or 0) + (data.get("completion_tokens") or 0)
            data = {**data, "cost_usd": run_cost(data["cost_usd"], tokens, 0)}
        return data

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


class StepChanged(_Change):
    seq: int
    kind: StepKind
    status: StepStatus
    tool: str | None = None


class ApprovalChanged(_Change):
    approval_id: uuid.UUID
    seq: int
    agent: str
    tool: str
    status: ApprovalStatus


Change = RunChanged | StepChanged | ApprovalChanged
Payload = Change | QueueStats

# What a trigger announces about one project; another project's client never sees it.
PROJECT_EVENTS: dict[EventName, type[Change]] = {
    EventName.RUN: RunChanged,
    EventName.STEP: StepChanged,
    EventName.APPROVAL: ApprovalChanged,
}
PAYLOADS: dict[EventName, type[Payload]] = {**PROJECT_EVENTS, EventName.QUEUE: QueueStats}


def parse_payload(name: str, data: object) -> Payload | None:
    """The typed payload of event `name`, or None for an event without one, an event
    this version does not know, or data that does not match."""
    try:
        model = PAYLOADS.get(EventName(name))
    except ValueError:
        return None
    if model is None:
        return None
    try:
        return model.model_validate(data)
    except ValidationError:
        return None
