"""`/v1/threads`: conversations whose runs continue one another (`thread_id` on a run)."""

from __future__ import annotations

import uuid

from quart import Blueprint
from quart_schema import tag, validate_querystring, validate_request, validate_response

from services.contract.api import PageQuery
from services.contract.errors import ErrorCode
from services.contract.ids import uuid7
from services.contract.threads import Thread, ThreadCreate, ThreadMessagePage, ThreadPage
from services.gateway.auth import READERS, RUN_STARTERS, allow, project, require_role
from services.gateway.errors import BadRequest
from services.gateway.pagination import decode_cursor, paginate
from services.gateway.runtime import runtime
from services.gateway.store import threads as store

blueprint = Blueprint("threads", __name__, url_prefix="/v1/threads")
require_role(blueprint, *READERS)


@blueprint.post("")
@tag(["threads"])
@validate_request(ThreadCreate)
@validate_response(Thread, 201)
@allow(*RUN_STARTERS)
async def create_thread(data: ThreadCreate) -> tuple[Thread, int]:
    """Start a conversation; each run given its `thread_id` continues it."""
    return await store.create(runtime().pool, project(), data, uuid7()), 201


@blueprint.get("")
@tag(["threads"])
@validate_querystring(PageQuery)
@validate_response(ThreadPage)
async def list_threads(query_args: PageQuery) -> ThreadPage:
    """The project's threads, newest first."""
    items = await store.list_threads(
        runtime().pool,
        project(),
        before=decode_cursor(query_args.cursor, uuid.UUID),
        limit=query_args.limit + 1,
    )
    page, next_cursor = paginate(items, query_args.limit, lambda t: [str(t.id)])
    return ThreadPage(items=page, next_cursor=next_cursor)


@blueprint.get("/<uuid:thread_id>")
@tag(["threads"])
@validate_response(Thread)
async def get_thread(thread_id: uuid.UUID) -> Thread:
    """A thread: how many runs it has had, and the one in progress, if any."""
    return await store.get(runtime().pool, project(), thread_id)


@blueprint.get("/<uuid:thread_id>/messages")
@tag(["threads"])
@validate_querystring(PageQuery)
@validate_response(ThreadMessagePage)
async def list_messages(thread_id: uuid.UUID, query_args: PageQuery) -> ThreadMessagePage:
    """The conversation in order, as the model is told it: each run's input, the replies,
    and the result of every tool call they asked for."""
    items = await store.messages(
        runtime().pool,
        project(),
        thread_id,
        after=_position(decode_cursor(query_args.cursor, str)),
        limit=query_args.limit + 1,
    )
    page, next_cursor = paginate(items, query_args.limit, lambda m: [f"{m.run_id}/{m.index}"])
    return ThreadMessagePage(items=page, next_cursor=next_cursor)


def _position(cursor: str | None) -> tuple[uuid.UUID, int] | None:
    if cursor is None:
        return None
    run_id, _, index = cursor.partition("/")
    try:
        return uuid.UUID(run_id), int(index)
    except ValueError:
        raise BadRequest(
            "cursor is not one this API issued", code=ErrorCode.INVALID_CURSOR
        ) from None
