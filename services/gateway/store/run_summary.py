"""What a project's runs did over a window, counted in PostgreSQL.

The deck's dashboard used to page through the newest 2,000 runs over HTTP and count
them itself, so past 2,000 runs in the window it showed a part as if it were the whole.
Run ids are UUIDv7, so the window is an id range of the `(project, id)` index (no
timestamp index needed), and the open counts walk `(project, status, id)`; one
statement answers both.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import asyncpg

from services.contract.api import AgentSummary, RunSummary
from services.contract.ids import first_uuid7_at
from services.contract.runs import RunStatus
from services.gateway.errors import UnprocessableEntity

# A window ends where run ids can say (UUIDv7 counts from 1970, and a window may be a day
# long) and where datetime can reach.
_EARLIEST_UNTIL = datetime(1970, 1, 2)
_LATEST_UNTIL = datetime(9999, 12, 31)
_OPEN = [
    RunStatus.QUEUED.value,
    RunStatus.RUNNING.value,
    RunStatus.WAITING_APPROVAL.value,
    RunStatus.WAITING_THREAD.value,
]


async def summarize(
    pool: asyncpg.Pool, project: str, minutes: int, until: datetime | None = None
) -> RunSummary:
    until = until or datetime.now(UTC)
    if not _EARLIEST_UNTIL <= until.replace(tzinfo=None) <= _LATEST_UNTIL:
        raise UnprocessableEntity(
            "until must be between 1970-01-02 and 9999-12-31: run ids count time from 1970"
        )
    since = until - timedelta(minutes=minutes)
    rows = await pool.fetch(
        """WITH windowed AS (
               SELECT status, agent_name, prompt_tokens + completion_tokens AS tokens,
                      cost_usd, dead_lettered_at IS NOT NULL AS dead
                 FROM runs WHERE project = $1 AND id >= $2 AND id < $4
           )
           SELECT 'status' AS kind, status AS name, count(*) AS n,
                  sum(tokens) AS tokens, sum(cost_usd) AS cost,
                  count(*) FILTER (WHERE cost_usd IS NULL) AS unpriced, 0 AS completed,
                  0 AS failed, count(*) FILTER (WHERE dead) AS dead
             FROM windowed GROUP BY status
           UNION ALL
           SELECT 'agent', agent_name, count(*), 0, coalesce(sum(cost_usd), 0), 0,
                  count(*) FILTER (WHERE status = 'completed'),
                  count(*) FILTER (WHERE status = 'failed'), 0
             FROM windowed GROUP BY agent_name
           UNION ALL
           SELECT 'open', status, count(*), 0, 0, 0, 0, 0, 0
             FROM runs WHERE project = $1 AND status = ANY($3::text[]) GROUP BY status""",
        project,
        first_uuid7_at(since),
        _OPEN,
        first_uuid7_at(until + timedelta(milliseconds=1)),
    )
    by_status = {r["name"]: r["n"] for r in rows if r["kind"] == "status"}
    in_window = [r for r in rows if r["kind"] == "status"]
    return RunSummary(
        window_minutes=minutes,
        since=since,
        until=until,
        open={status: 0 for status in _OPEN}
        | {r["name"]: r["n"] for r in rows if r["kind"] == "open"},
        started=sum(by_status.values()),
        by_status=by_status,
        completed=by_status.get(RunStatus.COMPLETED.value, 0),
        total_tokens=sum(r["tokens"] or 0 for r in in_window),
        cost_usd=float(sum(r["cost"] or 0 for r in in_window)),
        unpriced=sum(r["unpriced"] for r in in_window),
        dead_lettered=sum(r["dead"] for r in in_window),
        agents=sorted(
            (
                AgentSummary(
                    agent=r["name"],
                    started=r["n"],
                    completed=r["completed"],
                    failed=r["failed"],
                    cost_usd=float(r["cost"]),
                )
                for r in rows
                if r["kind"] == "agent"
            ),
            key=lambda a: (-a.started, a.agent),
        ),
    )
