"""What `GET /v1/queue` answers and the SSE `queue` event carries: the caller's project's
runs waiting and running, whether its new runs get in, and — only where the operator opts
in (`FERRUMDECK_PLATFORM_VIEW`) — the runs stream as the workers' consumer group
sees it, so an operator can tell a backlog from a stuck worker. A tenant is not shown the
platform's backlog or the workers' names: the stream fields are null in its view."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class ConsumerStats(BaseModel):
    name: str
    pending: int = Field(description="Entries delivered to this consumer and not yet acked.")
    idle_seconds: float = Field(description="Time since this consumer last read or acked.")


class ProjectQuota(BaseModel):
    """What an operator allows one project (`ferrumdeck projects set-quota`); null: no
    such quota. Past one, only that project's new runs get 429."""

    model_config = ConfigDict(extra="forbid")

    max_queued: int | None = Field(default=None, ge=1, description="Runs waiting at once.")
    max_running: int | None = Field(default=None, ge=1, description="Runs running at once.")
    runs_per_second: float | None = Field(
        default=None, gt=0, description="Runs created per second, across all gateways."
    )

    def any(self) -> bool:
        return any(value is not None for value in self.model_dump().values())


class QueueStats(BaseModel):
    stream: str | None = None
    group: str | None = None
    depth: int | None = Field(
        default=None, description="Entries in the stream (XLEN), acked ones included."
    )
    pending: int | None = Field(
        default=None, description="Entries delivered to some worker and not yet acked."
    )
    lag: int | None = Field(
        default=None,
        description="Entries not yet delivered to the group; null when Redis cannot tell.",
    )
    oldest_pending_seconds: float | None = Field(
        default=None,
        description="Age of the oldest unacked entry since it was published; null if none.",
    )
    consumers: list[ConsumerStats] | None = None
    dead_letter: int | None = Field(
        default=None, description="Jobs set aside after too many deliveries (the DLQ's length)."
    )
    project: str | None = Field(
        default=None, description="Whose figures `waiting` and `running` are."
    )
    running: int | None = Field(default=None, description="The project's runs running now.")
    quota: ProjectQuota | None = Field(
        default=None, description="The project's quotas, when the operator set any."
    )
    waiting: int | None = Field(
        default=None,
        description="The project's runs waiting for a worker (queued), wherever their jobs "
        "are: fair dispatch keeps most of a backlog in the outbox and only a window in the "
        "stream.",
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
        default=None, description="Whether POST /v1/runs is accepting the project's runs now."
    )
