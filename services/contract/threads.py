"""Threads: conversations whose runs continue one another, and the messages they hold.

A thread is the memory an integration would otherwise keep itself. Its history is
rebuilt from what the platform recorded anyway — each run's input and steps — so there is
no second copy to drift from the audit trail, and a message shows what the model was
really told.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, JsonValue

from services.contract.runs import RunStatus


class ThreadCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    metadata: dict[str, Any] = Field(default_factory=dict, max_length=50)


class Thread(BaseModel):
    id: uuid.UUID
    metadata: dict[str, Any]
    created_at: datetime
    runs: int = Field(description="Runs started on it so far.")
    open_run_id: uuid.UUID | None = Field(
        description="The run in progress (queued, running or waiting for an approval), "
        "which a new run on this thread waits behind; None when the thread is idle."
    )


class ThreadPage(BaseModel):
    items: list[Thread]
    next_cursor: str | None


class ThreadMessage(BaseModel):
    """One chat message of the thread's history, in the OpenAI chat format."""

    run_id: uuid.UUID
    run_status: RunStatus
    index: int = Field(description="Its place among its run's messages, from 0.")
    message: dict[str, JsonValue]


class ThreadMessagePage(BaseModel):
    items: list[ThreadMessage]
    next_cursor: str | None


class HistoryLimit(BaseModel):
    """How much of a thread's history an agent's runs are sent."""

    model_config = ConfigDict(extra="forbid")

    max_tokens: int = Field(
        ge=1,
        le=10_000_000,
        description="Send only the newest earlier runs whose messages fit in this many "
        "tokens (whole runs, counted by LiteLLM for the agent's model): the oldest go first.",
    )
