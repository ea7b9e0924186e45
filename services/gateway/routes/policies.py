"""`/v1/policies`: the rules every tool call is decided by, versioned, and explained."""

from __future__ import annotations

from quart import Blueprint
from quart_schema import tag, validate_querystring, validate_request, validate_response

from services.contract.api import PageQuery, PolicyState, PolicyVersionOut, Role
from services.contract.policy import EvaluateRequest, PolicyDecision, PolicySet
from services.gateway.auth import READERS, allow, current_actor, project, require_role
from services.gateway.pagination import decode_cursor, paginate
from services.gateway.policy import ToolCall
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
@validate_request(PolicySet)
@validate_response(PolicyVersionOut)
@allow(Role.ADMIN)
async def put_policies(data: PolicySet) -> PolicyVersionOut:
    """Replace the rules; the new set becomes the next version and is in force at once."""
    async with runtime().pool.acquire() as conn:
        version = await store.put_policy(conn, project(), data, current_actor())
    return _out(version)


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
