"""`/v1/policies`: the rules every tool call is decided by, versioned, and explained."""

from __future__ import annotations

import asyncio

from pydantic import ValidationError
from quart import Blueprint, Response, request
from quart_schema import (
    RequestSchemaValidationError,
    document_request,
    document_response,
    tag,
    validate_querystring,
    validate_request,
    validate_response,
)

from services.contract.api import PageQuery, PolicyState, PolicyVersionOut, Role
from services.contract.policy import EvaluateRequest, PolicyDecision, PolicySet
from services.gateway.auth import READERS, allow, current_actor, project, require_role
from services.gateway.pagination import decode_cursor, paginate
from services.gateway.policy import ToolCall
from services.gateway.request_text import decode
from services.gateway.runtime import runtime
from services.gateway.store import policies as store

blueprint = Blueprint("policies", __name__, url_prefix="/v1/policies")
require_role(blueprint, *READERS)


def _out(version: store.PolicyVersion) -> PolicyVersionOut:
    return PolicyVersionOut(
        version=version.version,
        rules=version.rules,
        created_by=version.created_by,
        created_at=version.created_at,
    )


@blueprint.get("")
@tag(["policies"])
@validate_querystring(PageQuery)
@validate_response(PolicyState)
async def get_policies(query_args: PageQuery) -> PolicyState:
    """The rules in force and earlier versions, newest first."""
    pool = runtime().pool
    current = await store.current_policy(pool, project())
    before = decode_cursor(query_args.cursor, int)
    versions = await store.history(pool, project(), before=before, limit=query_args.limit + 1)
    page, next_cursor = paginate(versions, query_args.limit, lambda v: [v.version])
    return PolicyState(
        version=current.version if current else 0,
        rules=current.rules if current else [],
        history=[_out(v) for v in page],
        next_cursor=next_cursor,
    )


@blueprint.put("")
@tag(["policies"])
@document_request(PolicySet)
@document_response(PolicyVersionOut)
@allow(Role.ADMIN)
async def put_policies() -> Response:
    """Replace the rules; the new set becomes the next version and is in force at once.

    Decoded, validated and answered in a thread, not on the event loop: 2,000 rules with
    long regexes take a few hundred milliseconds to parse and check (each regex is
    compiled), which every other project's requests would otherwise wait for."""
    data = await asyncio.to_thread(_policy_set, await request.get_data(as_text=False))
    async with runtime().pool.acquire() as conn:
        version = await store.put_policy(conn, project(), data, current_actor())
    body = await asyncio.to_thread(_out(version).model_dump_json)
    return Response(body, content_type="application/json")


def _policy_set(body: str | bytes) -> PolicySet:
    try:
        return PolicySet.model_validate(decode(body))
    except ValidationError as exc:
        raise RequestSchemaValidationError(exc) from None


@blueprint.post("/evaluate")
@tag(["policies"])
@validate_request(EvaluateRequest)
@validate_response(PolicyDecision)
async def evaluate(data: EvaluateRequest) -> PolicyDecision:
    """What would happen to this call under the policy in force, and which rule decides."""
    async with runtime().pool.acquire() as conn:
        policy = await store.compiled_policy(conn, project())
    return policy.evaluate(
        ToolCall(
            agent=data.agent,
            tool=data.tool,
            arguments=data.arguments,
            calls_in_run=data.calls_in_run,
            identical_in_a_row=data.identical_in_a_row,
        )
    )
