"""What `GET /v1/queue` answers and the SSE `queue` event carries: the runs stream as the
workers' consumer group sees it, so an operator can tell a backlog from a stuck worker."""

from __future__ import annotations

from pydantic import BaseModel, Field


class ConsumerStats(BaseModel):
    name: str
    pending: int = Field(description="Entries delivered to this consumer and not yet acked.")
    idle_seconds: float = Field(description="Time since this consumer last read or acked.")


class QueueStats(BaseModel):
    stream: str
    group: str
    depth: int = Field(description="Entries in the stream (XLEN), acked ones included.")
    pending: int = Field(description="Entries delivered to some worker and not yet acked.")
    lag: int | None = Field(
        description="Entries not yet delivered to the group; null when Redis cannot tell."
    )
    oldest_pending_seconds: float | None = Field(
        description="Age of the oldest unacked entry since it was published; null if none."
    )
    consumers: list[ConsumerStats]
    dead_letter: int = Field(
        default=0, description="Jobs set aside after too many deliveries (the DLQ's length)."
    )
    waiting: int | None = Field(
        default=None,
        description="Runs waiting for a worker (queued), wherever their jobs are: fair "
        "dispatch keeps most of a backlog in the outbox and only a window in the stream.",
    )
    max_lag: int | None = Field(
        default=None,
        description="The backlog bound past which new runs get 429, from the projects "
        "holding their share of it.",
    )
    max_oldest_pending_seconds: float | None = Field(
        default=None, description="The age bound past which new runs get 429."
    )
    accepting_runs: bool | None = Field(
        default=None, description="Whether POST /v1/runs is accepting runs now."
    )
