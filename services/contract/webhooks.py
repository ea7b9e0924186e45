"""Webhooks for run endings: what a project registers, and the deliveries it can inspect.

Deliveries follow the Standard Webhooks specification (standardwebhooks.com): each
carries `webhook-id` (the delivery's id, the same on every retry, so a receiver can
drop duplicates), `webhook-timestamp` and `webhook-signature: v1,<base64 HMAC-SHA256>`
over `id.timestamp.body`, keyed by the secret shown once at registration. The body is
`{"type", "timestamp", "data"}` with the run as `GET /v1/runs/{id}` shows it.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, HttpUrl

from services.contract.runs import RunStatus


class WebhookEvent(StrEnum):
    """A run reaching a status worth telling an integration about."""

    RUN_COMPLETED = "run.completed"
    RUN_FAILED = "run.failed"
    RUN_CANCELLED = "run.cancelled"
    RUN_BUDGET_EXCEEDED = "run.budget_exceeded"
    RUN_WAITING_APPROVAL = "run.waiting_approval"

    @classmethod
    def of(cls, status: RunStatus) -> WebhookEvent:
        return cls(f"run.{status.value}")


RUN_ENDINGS = [
    WebhookEvent.RUN_COMPLETED,
    WebhookEvent.RUN_FAILED,
    WebhookEvent.RUN_CANCELLED,
    WebhookEvent.RUN_BUDGET_EXCEEDED,
]


class DeliveryStatus(StrEnum):
    PENDING = "pending"  # waiting for its first or next attempt
    DELIVERED = "delivered"  # the receiver answered 2xx
    FAILED = "failed"  # every attempt of the retry schedule failed


class WebhookCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: HttpUrl = Field(description="http(s) URL the deliveries are POSTed to.")
    events: list[WebhookEvent] = Field(
        default_factory=lambda: list(RUN_ENDINGS),
        min_length=1,
        max_length=len(WebhookEvent),
        description="What to deliver; every run ending by default.",
    )


class Webhook(BaseModel):
    id: uuid.UUID
    url: str
    events: list[WebhookEvent]
    created_at: datetime


class WebhookCreated(Webhook):
    secret: str = Field(
        description="The signing secret (`whsec_…`), shown only now: verify each delivery's "
        "`webhook-signature` with it."
    )


class WebhookList(BaseModel):
    items: list[Webhook]


class Delivery(BaseModel):
    id: uuid.UUID = Field(description="The `webhook-id` header of every attempt.")
    event: WebhookEvent
    run_id: uuid.UUID
    status: DeliveryStatus
    attempts: int
    next_attempt_at: datetime | None
    last_attempt_at: datetime | None
    last_status_code: int | None
    last_error: str | None
    created_at: datetime
    delivered_at: datetime | None


class DeliveryPage(BaseModel):
    items: list[Delivery]
    next_cursor: str | None
