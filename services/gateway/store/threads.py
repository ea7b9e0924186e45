"""Threads in PostgreSQL (migration 0021): created, listed, and read back as history.

A thread's history is its runs' inputs and steps, read when it is needed — by a claim,
for the worker, and by `GET /v1/threads/{id}/messages` — and turned into chat messages
by `contract.transcript`, the same way for both.
"""

from __future__ import annotations

import uuid

import asyncpg

from services.contract.runs import RunStatus
from services.contract.threads import Thread, ThreadCreate, ThreadMessage
from services.contract.transcript import turn_messages
from services.contract.worker_api import PriorStep, PriorTurn
from services.gateway.errors import NotFound

# A run's steps as the worker gets them (`PriorStep`), for a row of `runs` named `{run}`.
PRIOR_STEPS = """(SELECT coalesce(jsonb_agg(jsonb_build_object(
               'seq', s.seq, 'kind', s.kind, 'status', s.status,
               'tool', s.tool, 'tool_call_id', s.tool_call_id,
               'input', s.input, 'output', s.output,
               'error', s.error, 'idempotent', s.idempotent)
             ORDER BY s.seq), '[]')
      FROM steps s WHERE s.run_id = {run}.id)"""

MAX_HISTORY_TURNS = 200
"""Earlier runs a claim carries, the newest ones: a model's context ends long before."""

_THREAD = """t.id, t.metadata, t.created_at,
    (SELECT count(*) FROM runs r WHERE r.thread_id = t.id) AS runs,
    (SELECT r.id FROM runs r WHERE r.thread_id = t.id
        AND r.status IN ('queued', 'running', 'waiting_approval')) AS open_run_id"""


def _thread(row: asyncpg.Record) -> Thread:
    return Thread(
        id=row["id"],
        metadata=row["metadata"],
        created_at=row["created_at"],
        runs=row["runs"],
        open_run_id=row["open_run_id"],
    )


def _turn(row: asyncpg.Record) -> PriorTurn:
    return PriorTurn(
        run_id=row["id"],
        status=RunStatus(row["status"]),
        input=row["input"],
        messages=row["messages"],
        steps=[PriorStep.model_validate(step) for step in row["steps"]],
    )


async def create(
    pool: asyncpg.Pool, project: str, body: ThreadCreate, thread_id: uuid.UUID
) -> Thread:
    row = await pool.fetchrow(
        f"""WITH t AS (INSERT INTO threads (id, project, metadata) VALUES ($1, $2, $3::jsonb)
                       RETURNING *)
            SELECT {_THREAD} FROM t""",
        thread_id,
        project,
        body.metadata,
    )
    assert row is not None
    return _thread(row)


async def get(
    conn: asyncpg.Pool | asyncpg.Connection, project: str, thread_id: uuid.UUID
) -> Thread:
    row = await conn.fetchrow(
        f"SELECT {_THREAD} FROM threads t WHERE t.project = $1 AND t.id = $2", project, thread_id
    )
    if row is None:
        raise NotFound(f"no thread {thread_id}")
    return _thread(row)


async def list_threads(
    pool: asyncpg.Pool, project: str, *, before: uuid.UUID | None, limit: int
) -> list[Thread]:
    rows = await pool.fetch(
        f"""SELECT {_THREAD} FROM threads t
             WHERE t.project = $1 AND ($2::uuid IS NULL OR t.id < $2)
             ORDER BY t.id DESC LIMIT $3""",
        project,
        before,
        limit,
    )
    return [_thread(row) for row in rows]


async def history(
    conn: asyncpg.Pool | asyncpg.Connection, thread_id: uuid.UUID, before_run: uuid.UUID
) -> list[PriorTurn]:
    """The thread's runs before `before_run`, oldest first (the newest MAX_HISTORY_TURNS)."""
    rows = await conn.fetch(
        f"""SELECT * FROM (
                SELECT r.id, r.status, r.input, r.messages, {PRIOR_STEPS.format(run="r")} AS steps
                  FROM runs r WHERE r.thread_id = $1 AND r.id < $2
                 ORDER BY r.id DESC LIMIT $3) newest
            ORDER BY id""",
        thread_id,
        before_run,
        MAX_HISTORY_TURNS,
    )
    return [_turn(row) for row in rows]


async def messages(
    pool: asyncpg.Pool,
    project: str,
    thread_id: uuid.UUID,
    *,
    after: tuple[uuid.UUID, int] | None,
    limit: int,
) -> list[ThreadMessage]:
    """The thread's messages in order, from just after `after` (a run and an index)."""
    if not await exists(pool, project, thread_id):
        raise NotFound(f"no thread {thread_id}")
    # Every run holds at least its input, so past the cursor's own run, `limit` runs hold
    # at least `limit` messages.
    rows = await pool.fetch(
        f"""SELECT r.id, r.status, r.input, r.messages, {PRIOR_STEPS.format(run="r")} AS steps
              FROM runs r WHERE r.thread_id = $1 AND ($2::uuid IS NULL OR r.id >= $2)
             ORDER BY r.id LIMIT $3""",
        thread_id,
        after[0] if after else None,
        limit + 1,
    )
    found: list[ThreadMessage] = []
    for row in rows:
        turn = _turn(row)
        for index, message in enumerate(
            turn_messages(turn.input, turn.status, turn.steps, turn.messages)
        ):
            if after is not None and (turn.run_id, index) <= after:
                continue
            found.append(
                ThreadMessage(
                    run_id=turn.run_id, run_status=turn.status, index=index, message=message
                )
            )
    return found[:limit]


async def exists(pool: asyncpg.Pool, project: str, thread_id: uuid.UUID) -> bool:
    found = await pool.fetchval(
        "SELECT 1 FROM threads WHERE project = $1 AND id = $2", project, thread_id
    )
    return found is not None
