"""Reading a run's steps, in order, as the API shows them."""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any

import asyncpg

from services.contract.api import ApprovalStatus, Step
from services.contract.runs import StepKind, StepStatus, Usage

STEP_COLUMNS = """seq, kind, status, model, tool, input, output, error, prompt_tokens,
    completion_tokens, cost_usd, decision, worker, started_at, finished_at"""


def to_step(row: asyncpg.Record) -> Step:
    usage = None
    if row["prompt_tokens"] is not None:
        cost: Decimal | None = row["cost_usd"]
        usage = Usage(
            prompt_tokens=row["prompt_tokens"],
            completion_tokens=row["completion_tokens"],
            total_tokens=row["prompt_tokens"] + row["completion_tokens"],
            cost_usd=None if cost is None else float(cost),
        )
    return Step(
        seq=row["seq"],
        kind=StepKind(row["kind"]),
        status=_status(StepStatus(row["status"]), row["decision"]),
        model=row["model"],
        tool=row["tool"],
        input=row["input"],
        output=row["output"],
        error=row["error"],
        usage=usage,
        decision=row["decision"],
        worker=row["worker"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
    )


def _status(recorded: StepStatus, decision: dict[str, Any] | None) -> StepStatus:
    """`expired` for a call whose approval nobody decided in time: the table stores it as
    `rejected` (the call was not made, which is all the worker needs to tell the model),
    and its decision says how the approval ended."""
    expired = (decision or {}).get("approval_status") == ApprovalStatus.EXPIRED
    return StepStatus.EXPIRED if recorded is StepStatus.REJECTED and expired else recorded


async def list_steps(
    conn: asyncpg.Pool | asyncpg.Connection, run_id: uuid.UUID, *, after: int, limit: int
) -> list[Step]:
    rows = await conn.fetch(
        f"""SELECT {STEP_COLUMNS} FROM steps WHERE run_id = $1 AND seq > $2
             ORDER BY seq LIMIT $3""",
        run_id,
        after,
        limit,
    )
    return [to_step(r) for r in rows]
