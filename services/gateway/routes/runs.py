"""`/v1/runs`: start runs, follow them, cancel them, queue dead-lettered ones again."""

from __future__ import annotations

import hashlib
import logging
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

from quart import Blueprint, Response, make_response, request
from quart_schema import tag, validate_querystring, validate_request, validate_response
from redis.exceptions import RedisError

from services.contract.api import (
    PageQuery,
    Run,
    RunCreate,
    RunListQuery,
    RunPage,
    RunSummary,
    RunSummaryQuery,
    RunWaitQuery,
    StepPage,
)
from services.contract.errors import ErrorCode
from services.contract.ids import first_uuid7_at
from services.contract.run_stream import END_ID, StreamPosition
from services.gateway import dead_letter_stream, metrics
from services.gateway.audit import request_id as audit_request_id
from services.gateway.auth import (
    DECIDERS,
    READERS,
    RUN_STARTERS,
    allow,
    current_actor,
    project,
    require_role,
)
from services.gateway.errors import BadRequest, UnprocessableEntity
from services.gateway.events import event_hub
from services.gateway.pagination import decode_cursor, encode_cursor, paginate
from services.gateway.prefer import preferred_wait
from services.gateway.run_stream import RunStream
from services.gateway.runtime import runtime
from services.gateway.store import agents as agent_store
from services.gateway.store import dead_lettered_runs, run_summary
from services.gateway.store import runs as store
from services.gateway.store import threads as thread_store
from services.gateway.store.steps import list_steps

log = logging.getLogger(__name__)

blueprint = Blueprint("runs", __name__, url_prefix="/v1/runs")
require_role(blueprint, *READERS)

_MAX_IDEMPOTENCY_KEY = 200
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@blueprint.post("")
@tag(["runs"])
@validate_request(RunCreate)
@validate_response(Run, 202)
@validate_response(Run, 200)
@allow(*RUN_STARTERS)
async def create_run(data: RunCreate) -> tuple[Run, int, dict[str, str]]:
    """Start a run; answers 202 at once, before any worker has seen it.

    Send `Idempotency-Key` to make retries safe: a repeat returns the run the first
    request created. A 202 means the run is committed: it survives a crash.

    Send `Prefer: wait=N` (RFC 7240, N seconds, at most 60) to have the answer instead:
    200 with the finished run if it finishes within N seconds, else 202 with the run as
    it is then — also as soon as it parks waiting for an approval.
    `Preference-Applied` says the wait that was honoured.
    """
    key = request.headers.get("Idempotency-Key")
    if key is not None and not 1 <= len(key) <= _MAX_IDEMPOTENCY_KEY:
        raise BadRequest(
            f"Idempotency-Key must be 1 to {_MAX_IDEMPOTENCY_KEY} characters",
            code=ErrorCode.INVALID_IDEMPOTENCY_KEY,
        )
    name, _, version = data.agent.partition("@")
    res = runtime()
    await res.backpressure.admit(project())
    agent = await agent_store.get_version(
        res.pool, project(), name, int(version) if version else None, cache=res.agent_cache
    )
    if agent is None:
        raise UnprocessableEntity(f"no agent {data.agent!r}", code=ErrorCode.UNKNOWN_AGENT)
    if data.thread_id is not None and not await thread_store.exists(
        res.pool, project(), data.thread_id
    ):
        raise UnprocessableEntity(f"no thread {data.thread_id}", code=ErrorCode.UNKNOWN_THREAD)
    request_hash = (
        hashlib.sha256(data.model_dump_json().encode()).hexdigest() if key is not None else None
    )
    # Written together with whatever other requests are waiting (group commit); the
    # request id and actor go along, for the audit event written in another task.
    run, created = await res.run_intake.submit(
        store.NewRun(
            project=project(),
            agent=agent,
            body=data,
            idempotency_key=key,
            request_hash=request_hash,
            actor=current_actor(),
            request_id=audit_request_id(),
        )
    )
    if created:
        res.relay.wake()
        metrics.run_created()
    headers = {"Location": f"/v1/runs/{run.id}"}
    if not created:
        headers["Idempotent-Replayed"] = "true"
    wait = preferred_wait(request.headers.get("Prefer"))
    if wait is None:
        return run, 202, headers
    wait = min(wait, res.settings.run_wait_max_seconds)
    headers["Preference-Applied"] = f"wait={wait}"
    run = await _settled(run.id, wait)
    return run, 200 if run.status.terminal else 202, headers


async def _settled(run_id: uuid.UUID, seconds: int) -> Run:
    pool, owner = runtime().pool, project()
    if seconds <= 0:
        return await store.get_run(pool, owner, run_id)
    return await event_hub().waiters.until_settled(
        run_id, seconds, lambda: store.get_run(pool, owner, run_id)
    )


@blueprint.get("")
@tag(["runs"])
@validate_querystring(RunListQuery)
@validate_response(RunPage)
async def list_runs(query_args: RunListQuery) -> RunPage:
    """Runs, newest first, filtered by status, agent, whether they were dead-lettered
    (`dead_lettered=true`: the runs an operator may queue again), the end of their id
    (`id_ends_with`: find a run by the short id a screen showed), when they were created,
    and text in their input or output (`text`, read within bounds: see the parameter)."""
    before = decode_cursor(query_args.cursor, uuid.UUID)
    listing = await store.list_runs(
        runtime().pool,
        project(),
        store.RunFilter(
            status=query_args.status,
            agent=query_args.agent,
            dead_lettered=query_args.dead_lettered,
            id_ends_with=query_args.id_ends_with,
            text=query_args.text,
            ids_from=_first_id_at(query_args.created_after),
            ids_before=_first_id_at(query_args.created_before),
        ),
        before=before,
        limit=query_args.limit + 1,
    )
    page, next_cursor = paginate(listing.runs, query_args.limit, lambda r: [str(r.id)])
    if next_cursor is None and listing.read_to is not None:
        next_cursor = encode_cursor([str(listing.read_to)])
    return RunPage(items=page, next_cursor=next_cursor)


def _first_id_at(moment: datetime | None) -> uuid.UUID | None:
    """The id bound of `moment`; before 1970 is no bound (no UUIDv7 is older)."""
    if moment is None:
        return None
    return first_uuid7_at(max(moment, _EPOCH))


@blueprint.get("/summary")
@tag(["runs"])
@validate_querystring(RunSummaryQuery)
@validate_response(RunSummary)
async def summary(query_args: RunSummaryQuery) -> RunSummary:
    """What the project's runs did in the last `minutes` (by status, tokens, cost, per
    agent) and how many are open now, counted by the database rather than by paging
    through the runs; and how many runs the project was refused (429) lately, counted
    in Redis by every gateway."""
    res, own = runtime(), project()
    counted = await run_summary.summarize(res.pool, own, query_args.minutes, query_args.until)
    refused = await res.backpressure.refusals.of(own, counted.since, counted.until)
    return counted.model_copy(
        update={
            "refused": refused.count,
            "refused_minutes": refused.minutes,
            "refused_since": refused.since,
        }
    )


@blueprint.get("/<uuid:run_id>")
@tag(["runs"])
@validate_querystring(RunWaitQuery)
@validate_response(Run)
async def get_run(run_id: uuid.UUID, query_args: RunWaitQuery) -> Run:
    """One run with its status, output, error and usage totals.

    With `wait=N` the answer waits up to N seconds for the run to finish or park for an
    approval (the run as it is then, if neither happened).
    """
    return await _settled(run_id, min(query_args.wait, runtime().settings.run_wait_max_seconds))


@blueprint.get("/<uuid:run_id>/steps")
@tag(["runs"])
@validate_querystring(PageQuery)
@validate_response(StepPage)
async def get_steps(run_id: uuid.UUID, query_args: PageQuery) -> StepPage:
    """A run's steps in order, from 1."""
    after = decode_cursor(query_args.cursor, int) or 0
    pool = runtime().pool
    await store.get_run(pool, project(), run_id)
    items = await list_steps(pool, run_id, after=after, limit=query_args.limit + 1)
    page, next_cursor = paginate(items, query_args.limit, lambda s: [s.seq])
    return StepPage(items=page, next_cursor=next_cursor)


@blueprint.get("/<uuid:run_id>/stream")
@tag(["runs"])
async def stream_run(run_id: uuid.UUID) -> Response:
    """`text/event-stream` of the run as it happens: `token` events (text the model has
    written so far of step `step`, as it writes it), `step` events (each step once it
    has settled) and one `end` event with the finished run, after which the stream ends.

    A client that connects after the run ended gets its steps and `end` at once. Send
    the last event's id as `Last-Event-ID` to resume after it, missing and repeating
    nothing; after `end` (id `end`) the answer is 204. Tokens are a preview kept minutes
    in Redis, not stored: a run started with `"stream": true` publishes them from its
    first model call, any other from the first call made while someone follows it. A
    comment line is sent every 15 s of silence.
    """
    res, owner = runtime(), project()
    last = request.headers.get("Last-Event-ID")
    if last is not None and last.strip() == END_ID:
        await store.get_run(res.pool, owner, run_id)
        return Response(status=204)
    try:
        after = StreamPosition() if last is None else StreamPosition.parse(last)
    except ValueError as exc:
        raise BadRequest(str(exc), code=ErrorCode.INVALID_LAST_EVENT_ID) from exc
    await store.get_run(res.pool, owner, run_id)
    hub = event_hub()
    res.stream_slots.take()
    stream = RunStream(
        pool=res.pool,
        redis=res.stream_redis,
        streams=res.settings.streams,
        waiters=hub.waiters,
        project=owner,
        run_id=run_id,
        after=after,
        heartbeat_seconds=hub.heartbeat_seconds,
    )

    async def body() -> AsyncIterator[bytes]:
        try:
            async for chunk in stream.events():
                yield chunk
        finally:
            res.stream_slots.give_back()

    response = await make_response(
        body(),
        200,
        {
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",
        },
    )
    assert isinstance(response, Response)
    response.timeout = None
    return response


@blueprint.post("/<uuid:run_id>/cancel")
@tag(["runs"])
@validate_response(Run)
@allow(*DECIDERS)
async def cancel_run(run_id: uuid.UUID) -> Run:
    """Cancel a queued or running run; a finished run answers 409."""
    return await store.cancel_run(runtime().pool, project(), run_id, current_actor())


@blueprint.post("/<uuid:run_id>/requeue")
@tag(["runs"])
@validate_response(Run)
@allow(*DECIDERS)
async def requeue_run(run_id: uuid.UUID) -> Run:
    """Queue a dead-lettered run again; it resumes from its recorded steps.

    Only a run that failed because its job was delivered too often without finishing
    (`dead_lettered_at` set) can be queued again; any other answers 409
    `not_dead_lettered`. Its entries leave the dead-letter stream.
    """
    res = runtime()
    run = await dead_lettered_runs.requeue(res.pool, project(), run_id, current_actor())
    res.relay.wake()
    try:
        await dead_letter_stream.forget_run(res.redis, res.settings.streams, run_id)
    except (RedisError, OSError) as exc:
        log.warning("run %s queued again, but its dead-letter entries stay: %s", run_id, exc)
    return run
