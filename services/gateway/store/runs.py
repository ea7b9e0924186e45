"""Runs: creation through the outbox, reads, cancellation.

The worker side of a run's life (claim, steps, completion) is in `store.leases`.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal

import asyncpg

from services.contract.api import Agent, Run, RunCreate
from services.contract.audit_mac import Sealed
from services.contract.errors import ErrorCode
from services.contract.ids import uuid7
from services.contract.jobs import JobReason
from services.contract.runs import RunStatus, Usage, run_cost
from services.gateway import metrics
from services.gateway.audit import APPEND, Actor, record, seal
from services.gateway.errors import Conflict, NotFound
from services.gateway.outbox import enqueue
from services.gateway.store.approvals import cancel_for_run
from services.gateway.store.thread_queue import promote_next

RUN_COLUMNS = """id, agent_name, agent_version, status, input, output, error, metadata,
    prompt_tokens, completion_tokens, cost_usd, steps_count, created_at, started_at,
    finished_at, dead_lettered_at, request_hash, thread_id, messages, stream"""

_SWEEPER = Actor.system("sweeper")
# What can be cancelled; a run waiting for its thread too (it never ran).
_OPEN = (
    RunStatus.QUEUED,
    RunStatus.RUNNING,
    RunStatus.WAITING_APPROVAL,
    RunStatus.WAITING_THREAD,
)


def to_run(row: asyncpg.Record) -> Run:
    cost: Decimal | None = row["cost_usd"]
    return Run(
        id=row["id"],
        agent=row["agent_name"],
        agent_version=row["agent_version"],
        status=RunStatus(row["status"]),
        input=row["input"],
        output=row["output"],
        error=row["error"],
        metadata=row["metadata"],
        usage=Usage(
            prompt_tokens=row["prompt_tokens"],
            completion_tokens=row["completion_tokens"],
            total_tokens=row["prompt_tokens"] + row["completion_tokens"],
            cost_usd=run_cost(
                None if cost is None else float(cost),
                row["prompt_tokens"],
                row["completion_tokens"],
            ),
        ),
        steps_count=row["steps_count"],
        created_at=row["created_at"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        dead_lettered_at=row["dead_lettered_at"],
        thread_id=row["thread_id"],
        messages=row["messages"],
        stream=row["stream"],
    )


@dataclass(frozen=True)
class NewRun:
    """One `POST /v1/runs` to write: everything its rows need, taken in the request.

    The request id and the actor are captured here, in the request's task, because the
    rows may be written by another task (the intake's batch writer, `run_intake`), where
    the request's context variables are not set.
    """

    project: str
    agent: Agent
    body: RunCreate
    idempotency_key: str | None
    request_hash: str | None
    actor: Actor
    request_id: str | None
    id: uuid.UUID = field(default_factory=uuid7)


Created = tuple[Run, bool]
"""A written request: the run, and whether this request created it (else a replay)."""

# One statement, so one round trip and one (synchronous) commit for any number of runs:
# the runs, then an outbox row and a `run.created` event for each run actually inserted.
# Rows whose idempotency key is taken are skipped by ON CONFLICT and looked up after, as
# are rows for a thread that has an open run (migration 0021).
_CREATE_RUNS = f"""
WITH batch AS (
    SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::integer[], $5::text[],
                         $6::text[], $7::text[], $8::text[], $9::text[], $10::text[],
                         $11::text[], $13::uuid[], $14::uuid[], $15::text[],
                         $16::timestamptz[], $17::text[], $18::text[], $20::boolean[])
        WITH ORDINALITY AS b(id, project, agent_name, agent_version, input, metadata,
                             idempotency_key, request_hash, actor, actor_kind, request_id,
                             created_by_key, thread_id, messages, created_at, mac_key_id,
                             mac, stream, ord)
), created AS (
    INSERT INTO runs (project, id, agent_name, agent_version, status, input, metadata,
                      idempotency_key, request_hash, created_by_key, thread_id, messages,
                      stream)
    SELECT project, id, agent_name, agent_version, $19, input, metadata::jsonb,
           idempotency_key, request_hash, created_by_key, thread_id, messages::jsonb, stream
      FROM batch ORDER BY ord
    -- A taken idempotency key, or a thread that already has an open run (even one this
    -- statement just inserted): the row is skipped, and its request answered after.
    ON CONFLICT DO NOTHING
    RETURNING {RUN_COLUMNS}
), jobs AS (
    INSERT INTO outbox (run_id, reason, project)
    SELECT c.id, $12, b.project FROM created c JOIN batch b ON b.id = c.id
     WHERE $19 = 'queued' ORDER BY b.ord
), events AS (
    {APPEND}
    SELECT b.project, b.actor, b.actor_kind, 'run.created', 'run:' || c.id,
           jsonb_build_object('agent', c.agent_name || '@' || c.agent_version), b.request_id,
           b.created_at, b.mac_key_id, b.mac
      FROM created c JOIN batch b ON b.id = c.id ORDER BY b.ord
)
SELECT * FROM created"""

_HOLDERS = f"""
SELECT project, idempotency_key, {RUN_COLUMNS} FROM runs
 WHERE idempotency_key IS NOT NULL
   AND (project, idempotency_key) IN (SELECT * FROM unnest($1::text[], $2::text[]))"""


async def _insert(
    conn: asyncpg.Connection,
    to_insert: Sequence[NewRun],
    sealed: Sequence[Sealed],
    status: RunStatus,
) -> list[asyncpg.Record]:
    """The rows of `_CREATE_RUNS` inserted as `status` (queued ones with their jobs)."""
    rows: list[asyncpg.Record] = await conn.fetch(
        _CREATE_RUNS,
        [new.id for new in to_insert],
        [new.project for new in to_insert],
        [new.agent.name for new in to_insert],
        [new.agent.version for new in to_insert],
        [new.body.text for new in to_insert],
        [json.dumps(new.body.metadata) for new in to_insert],
        [new.idempotency_key for new in to_insert],
        [new.request_hash for new in to_insert],
        [new.actor.audited for new in to_insert],
        [new.actor.kind.value for new in to_insert],
        [new.request_id for new in to_insert],
        JobReason.CREATED.value,
        # The key that started each run: separation of duties compares its approvers
        # with it (`services/gateway/separation_of_duties.py`).
        [new.actor.key_id for new in to_insert],
        [new.body.thread_id for new in to_insert],
        [_messages_json(new) for new in to_insert],
        [s.created_at for s in sealed],
        [s.key_id for s in sealed],
        [s.mac for s in sealed],
        status.value,
        [new.body.stream for new in to_insert],
    )
    return rows


async def create_runs(
    conn: asyncpg.Connection, batch: Sequence[NewRun]
) -> list[Created | Conflict]:
    """Write many `POST /v1/runs` at once; one outcome per request, in order.

    Outside a transaction this is one statement, committed (synchronously, so durable)
    before it returns: inserting N runs costs one round trip and one WAL flush instead of
    N transactions of five round trips each.

    Idempotency keys behave as if the requests had been written one after another: the
    first request with a key inserts (or finds the run an earlier request made), and a
    later one with the same key replays that run, or gets the 409 if its body differs.
    Only the first of each key goes into the INSERT: the same key twice in one statement
    would make the second row depend on the first. Keyed rows are inserted in key order,
    so two batches waiting on each other's keys cannot deadlock.
    """
    first_of_key: dict[tuple[str, str], NewRun] = {}
    keyed: list[NewRun] = []
    unkeyed: list[NewRun] = []
    for new in batch:
        if new.idempotency_key is None:
            unkeyed.append(new)
        elif (new.project, new.idempotency_key) not in first_of_key:
            first_of_key[(new.project, new.idempotency_key)] = new
            keyed.append(new)
    keyed.sort(key=lambda new: (new.project, new.idempotency_key or ""))
    to_insert = keyed + unkeyed
    sealed = [
        seal(
            conn,
            new.project,
            new.actor,
            "run.created",
            f"run:{new.id}",
            {"agent": f"{new.agent.name}@{new.agent.version}"},
            new.request_id,
        )
        for new in to_insert
    ]
    rows = await _insert(conn, to_insert, sealed, RunStatus.QUEUED)
    inserted = {row["id"]: row for row in rows}
    # Who holds each key: this batch's run, or (key taken before) the run that took it.
    holders: dict[tuple[str, str], asyncpg.Record] = {
        scope: inserted[new.id] for scope, new in first_of_key.items() if new.id in inserted
    }
    taken = [scope for scope in first_of_key if scope not in holders]
    if taken:
        for row in await conn.fetch(
            _HOLDERS, [project for project, _ in taken], [key for _, key in taken]
        ):
            holders[(row["project"], row["idempotency_key"])] = row
    await _wait_for_threads(conn, to_insert, sealed, inserted, holders)
    return [_outcome(new, inserted, holders) for new in batch]


async def _wait_for_threads(
    conn: asyncpg.Connection,
    to_insert: Sequence[NewRun],
    sealed: Sequence[Sealed],
    inserted: dict[uuid.UUID, asyncpg.Record],
    holders: dict[tuple[str, str], asyncpg.Record],
) -> None:
    """Insert as `waiting_thread` the runs skipped for a busy thread that asked to wait
    (`if_busy: "enqueue"`); then give each of their threads a chance to take its next
    run at once, in case its open run ended between the two statements."""
    waiting = [
        (new, sealed_one)
        for new, sealed_one in zip(to_insert, sealed, strict=True)
        if new.id not in inserted
        and new.body.thread_id is not None
        and new.body.if_busy == "enqueue"
        and (new.idempotency_key is None or (new.project, new.idempotency_key) not in holders)
    ]
    if not waiting:
        return
    rows = await _insert(
        conn, [new for new, _ in waiting], [one for _, one in waiting], RunStatus.WAITING_THREAD
    )
    inserted.update((row["id"], row) for row in rows)
    for thread_id in {row["thread_id"] for row in rows}:
        promoted = await promote_next(conn, thread_id)
        if promoted is not None and promoted in inserted:
            row = await conn.fetchrow(f"SELECT {RUN_COLUMNS} FROM runs WHERE id = $1", promoted)
            assert row is not None
            inserted[promoted] = row


def _messages_json(new: NewRun) -> str | None:
    messages = new.body.wire_messages()
    return None if messages is None else json.dumps(messages)


def _thread_busy(thread_id: uuid.UUID) -> Conflict:
    return Conflict(
        f"thread {thread_id} has a run in progress; start the next one when it ends",
        code=ErrorCode.THREAD_BUSY,
    )


def _outcome(
    new: NewRun,
    inserted: dict[uuid.UUID, asyncpg.Record],
    holders: dict[tuple[str, str], asyncpg.Record],
) -> Created | Conflict:
    """What one request of a batch is answered: its new run, the run its key already
    made (a replay), or the conflict of a key reused for another body."""
    if new.id in inserted:
        return to_run(inserted[new.id]), True
    holder = holders.get((new.project, new.idempotency_key)) if new.idempotency_key else None
    if holder is None:
        if new.body.thread_id is not None:
            return _thread_busy(new.body.thread_id)
        # Keys are never released (runs are not deleted), and nothing else skips a row.
        raise RuntimeError(f"run {new.id} was neither inserted nor holds a key")
    if holder["id"] == new.id:
        return to_run(holder), True
    if holder["request_hash"] == new.request_hash:
        return to_run(holder), False
    return Conflict(
        "this Idempotency-Key was already used for a different request",
        code=ErrorCode.IDEMPOTENCY_KEY_REUSED,
    )


async def get_run(conn: asyncpg.Pool | asyncpg.Connection, project: str, run_id: uuid.UUID) -> Run:
    row = await conn.fetchrow(
        f"SELECT {RUN_COLUMNS} FROM runs WHERE project = $1 AND id = $2", project, run_id
    )
    if row is None:
        raise NotFound(f"no run {run_id}")
    return to_run(row)


SEARCH_ROWS = 5_000
SEARCH_BYTES = 16 * 1024 * 1024
"""What one text search may read: the newest runs under its filters, at most this many
and at most this much input and output (a run's sizes are known without reading it).
A search past them answers what it found with a cursor to read on, so its cost does not
grow with the project's history and a caller pages through as far as they care to."""


@dataclass(frozen=True)
class RunFilter:
    """What `GET /v1/runs` narrows the project's runs to. Times are id bounds: ids are
    UUIDv7, so a window of time is a range of the `(project, id)` index."""

    status: RunStatus | None = None
    agent: str | None = None
    dead_lettered: bool | None = None
    id_ends_with: str | None = None
    text: str | None = None
    ids_from: uuid.UUID | None = None
    ids_before: uuid.UUID | None = None


@dataclass(frozen=True)
class RunListing:
    runs: list[Run]
    read_to: uuid.UUID | None = None
    """Set when a text search stopped at its bounds before the end: the oldest id it
    read, from which the next page goes on (even if this one found no run)."""


# $1 project, $2 status, $3 agent, $4 below this id (the cursor), $5 limit,
# $6 dead-lettered, $7 reversed-id prefix, $8 from this id, $9 below this id (the window).
_WHERE = """project = $1
   AND ($2::text IS NULL OR status = $2)
   AND ($3::text IS NULL OR agent_name = $3)
   AND ($4::uuid IS NULL OR id < $4)
   AND ($6::boolean IS NULL OR (dead_lettered_at IS NOT NULL) = $6)
   AND ($8::uuid IS NULL OR id >= $8)
   AND ($9::uuid IS NULL OR id < $9)"""

# The bounds first, from sizes alone (`octet_length` of a stored text reads its header,
# not its value), then the text is looked for only within them, newest first.
_SEARCH = f"""
WITH read AS (
    SELECT id, row_number() OVER w AS n,
           sum(octet_length(input) + coalesce(octet_length(output), 0)) OVER w AS bytes
      FROM runs WHERE {_WHERE} {{suffix}}
     WINDOW w AS (ORDER BY id DESC) ORDER BY id DESC LIMIT $11
), bounds AS (
    SELECT (SELECT id FROM read WHERE n = 1 OR bytes <= $12 ORDER BY n DESC LIMIT 1) AS low,
           (SELECT count(*) = $11 OR bool_or(n > 1 AND bytes > $12) FROM read) AS more
)
SELECT b.low AS read_low, b.more AS read_more, r.*
  FROM bounds b LEFT JOIN LATERAL (
    SELECT {RUN_COLUMNS} FROM runs
     WHERE {_WHERE} {{suffix}} AND id >= b.low
       AND (strpos(lower(input), lower($10)) > 0
            OR strpos(lower(coalesce(output, '')), lower($10)) > 0)
     ORDER BY id DESC LIMIT $5
  ) r ON true"""


async def list_runs(
    pool: asyncpg.Pool,
    project: str,
    where: RunFilter,
    *,
    before: uuid.UUID | None,
    limit: int,
) -> RunListing:
    """Newest first; ids are UUIDv7, so id order is creation order. `id_ends_with` is a
    statement of its own, so the planner takes the suffix index (migration 0016) rather
    than walking the project's runs newest first for the few that end so. A text search
    reads within `SEARCH_ROWS` and `SEARCH_BYTES` (`RunListing.read_to`)."""
    suffix = "AND reverse(id::text) LIKE $7" if where.id_ends_with else "AND $7::text IS NULL"
    args = (
        project,
        where.status.value if where.status else None,
        where.agent,
        before,
        limit,
        where.dead_lettered,
        # The contract allows only hex digits and dashes: nothing LIKE would read.
        f"{where.id_ends_with[::-1]}%" if where.id_ends_with else None,
        where.ids_from,
        where.ids_before,
    )
    if where.text is None:
        rows = await pool.fetch(
            f"SELECT {RUN_COLUMNS} FROM runs WHERE {_WHERE} {suffix} ORDER BY id DESC LIMIT $5",
            *args,
        )
        return RunListing([to_run(r) for r in rows])
    rows = await pool.fetch(
        _SEARCH.format(suffix=suffix), *args, where.text, SEARCH_ROWS, SEARCH_BYTES
    )
    found = [to_run(r) for r in rows if r["id"] is not None]
    more = bool(rows and rows[0]["read_more"])
    return RunListing(found, rows[0]["read_low"] if more else None)


async def cancel_run(pool: asyncpg.Pool, project: str, run_id: uuid.UUID, actor: Actor) -> Run:
    """Make an open run `cancelled` at once; its worker learns it on its next callback,
    and a parked run's pending approval can no longer be decided."""
    async with pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(
            f"""UPDATE runs SET status = 'cancelled', error = $2, finished_at = now(),
                                updated_at = now(), lease_owner = NULL, lease_expires_at = NULL
                 WHERE project = $4 AND id = $1 AND status = ANY($3::text[])
                 RETURNING {RUN_COLUMNS}""",
            run_id,
            f"cancelled by {actor.name}",
            [s.value for s in _OPEN],
            project,
        )
        if row is not None:
            await cancel_for_run(conn, run_id)
            await record(conn, project, actor, "run.cancelled", f"run:{run_id}")
            if row["thread_id"] is not None:
                await promote_next(conn, row["thread_id"])
    if row is not None:
        metrics.run_finished(RunStatus.CANCELLED)
        return to_run(row)
    current = await get_run(pool, project, run_id)
    raise Conflict(f"run is already {current.status.value}", code=ErrorCode.RUN_FINISHED)


async def republish_stale(
    pool: asyncpg.Pool,
    *,
    after_seconds: float,
    waiting: Callable[[list[str]], Awaitable[set[str]]],
    batch: int = 500,
) -> int:
    """Publish again the runs no worker is moving: `queued` with no job waiting in the
    outbox, or `running` under an expired lease, untouched for `after_seconds`, whose
    last job is no longer `waiting` in the stream (undelivered, or pending with a
    consumer, from which `XAUTOCLAIM` will take it).

    PostgreSQL is the source of truth, so this recovers runs whose job Redis lost (a
    restart without persistence, FLUSHALL) and runs whose job was acknowledged by a
    worker that then died. A duplicate job is harmless (the claim fences it), but not
    free, hence the look at the stream first. Touching `updated_at` spaces out the
    checks of a run nobody picks up.
    """
    async with pool.acquire() as conn, conn.transaction():
        rows = await conn.fetch(
            """SELECT id, project, status, job_id FROM runs
                WHERE updated_at < now() - make_interval(secs => $1)
                  AND ((status = 'queued'
                        AND NOT EXISTS (SELECT 1 FROM outbox o WHERE o.run_id = runs.id))
                       OR (status = 'running' AND lease_expires_at < now()))
                ORDER BY id LIMIT $2
                FOR UPDATE SKIP LOCKED""",
            after_seconds,
            batch,
        )
        if not rows:
            return 0
        still_waiting = await waiting([row["job_id"] for row in rows if row["job_id"]])
        await conn.execute(
            "UPDATE runs SET updated_at = now() WHERE id = ANY($1::uuid[])",
            [row["id"] for row in rows],
        )
        lost = [row for row in rows if row["job_id"] not in still_waiting]
        for row in lost:
            await enqueue(conn, row["id"], JobReason.REQUEUED)
            await record(
                conn,
                row["project"],
                _SWEEPER,
                "run.republished",
                f"run:{row['id']}",
                {"status": row["status"]},
            )
    return len(lost)
