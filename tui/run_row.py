"""`RunRow`: what one line of the Runs screen shows, from the API's `Run` or from a `run`
event alone, so a live list never needs to fetch a run to show its change."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from services.contract.api import Run
from services.contract.events import RunChanged
from services.contract.runs import RunStatus


@dataclass(frozen=True)
class RunRow:
    id: str
    status: RunStatus
    agent: str
    agent_version: int
    created_at: datetime
    steps: int
    total_tokens: int
    cost_usd: float | None

    @classmethod
    def of_run(cls, run: Run) -> RunRow:
        return cls(
            id=str(run.id),
            status=run.status,
            agent=run.agent,
            agent_version=run.agent_version,
            created_at=run.created_at,
            steps=run.steps_count,
            total_tokens=run.usage.total_tokens,
            cost_usd=run.usage.cost_usd,
        )

    @classmethod
    def of_change(cls, change: RunChanged) -> RunRow | None:
        """The row an event describes; None from a gateway whose events carry only the
        state (before migration 0014), where the run must be fetched."""
        if change.created_at is None or change.agent_version is None:
            return None
        return cls(
            id=str(change.run_id),
            status=change.status,
            agent=change.agent,
            agent_version=change.agent_version,
            created_at=change.created_at,
            steps=change.steps,
            total_tokens=change.total_tokens,
            cost_usd=change.cost_usd,
        )
