"""`/v1/policies`: the rules every tool call is decided by, versioned, and explained.

A policy is bounded twice before anything expensive happens: its JSON by
`policy_max_bytes` (413 `policy_too_large`, checked against `Content-Length` before the
body is read and against the body itself), and its rules by `MAX_RULES` (422
`too_many_rules`, counted before any rule is validated, since validating compiles every
regex). Within them, 2,000 rules of long regexes are decoded, validated, checked against
the tools' schemas, encoded and answered in threads, so no other request waits.
"""

from __future__ import annotations

import asyncio
from typing import Any

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

from services.contract.api import (
    PageQuery,
    PolicyPruned,
    PolicyPruneQuery,
    PolicyState,
    PolicyVersionOut,
    PolicyVersionWritten,
    Role,
)
from services.contract.errors import ErrorCode
from services.contract.policy import (
    MAX_RULES,
    ApprovalSettings,
    EvaluateRequest,
    PolicyDecision,
    PolicySet,
)
from services.gateway.auth import READERS, allow, current_actor, project, require_role
from services.gateway.errors import ContentTooLarge, UnprocessableEntity
from services.gateway.pagination import decode_cursor, paginate
from services.gateway.policy import ToolCall
from services.gateway.policy_warnings import type_warnings
from services.gateway.request_text import decode, require_json
from services.gateway.runtime import runtime
from services.gateway.store import policies as store
from services.gateway.store.tools import catalogue

blueprint = Blueprint("policies", __name__, url_prefix="/v1/policies")
require_role(blueprint, *READERS)


def _out(version: store.PolicyVersion) -> PolicyVersionOut:
    return PolicyVersionOut(
        version=version.version,
        rules=version.rules,
        approvals=version.approvals,
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
        approvals=current.approvals if current else ApprovalSettings(),
        history=[_out(v) for v in page],
        next_cursor=next_cursor,
    )


@blueprint.put("")
@tag(["policies"])
@document_request(PolicySet)
@document_response(PolicyVersionWritten)
@allow(Role.ADMIN)
async def put_policies() -> Response:
    """Replace the rules; the new set becomes the next version and is in force at once.

    The answer's `warnings` name argument conditions that no call a known tool accepts
    can meet (a `gt` on an argument its inputSchema declares a string, …). Decoded,
    validated and answered in a thread, not on the event loop: 2,000 rules with long
    regexes take a few hundred milliseconds to parse and check (each regex is compiled),
    which every other project's requests would otherwise wait for."""
    require_json(request)
    limit = runtime().settings.policy_max_bytes
    if (request.content_length or 0) > limit:
        raise _too_large(request.content_length or 0, limit)
    body = await request.get_data(as_text=False)
    if len(body) > limit:
        raise _too_large(len(body), limit)
    schemas: dict[str, dict[str, Any]] = {}
    # The tools offered to this project, the most recent description first.
    for tool in await catalogue(runtime().pool, project()):
        schemas.setdefault(tool.name, tool.input_schema)
    data, warnings = await asyncio.to_thread(_checked_policy, body, schemas)
    async with runtime().pool.acquire() as conn:
        version = await store.put_policy(conn, project(), data, current_actor())
    written = PolicyVersionWritten(
        version=version.version,
        rules=version.rules,
        approvals=version.approvals,
        created_by=version.created_by,
        created_at=version.created_at,
        warnings=warnings,
    )
    return Response(
        await asyncio.to_thread(written.model_dump_json), content_type="application/json"
    )


def _too_large(size: int, limit: int) -> ContentTooLarge:
    return ContentTooLarge(
        f"a policy is at most {limit} bytes of JSON and this one is {size} "
        "(setting policy_max_bytes)",
        details={"limit": limit},
    )


def _checked_policy(
    body: str | bytes, schemas: dict[str, dict[str, Any]]
) -> tuple[PolicySet, list[str]]:
    document = decode(body)
    rules = document.get("rules") if isinstance(document, dict) else None
    if isinstance(rules, list) and len(rules) > MAX_RULES:
        raise UnprocessableEntity(
            f"a policy has at most {MAX_RULES} rules and this one has {len(rules)}",
            code=ErrorCode.TOO_MANY_RULES,
            details={"limit": MAX_RULES},
        )
    try:
        # Strictly, as JSON: a boolean is not a bound, nor a string a number; the document
        # says what each field takes, and a rule means what its author wrote.
        policy = PolicySet.model_validate_json(body, strict=True)
    except ValidationError as exc:
        raise RequestSchemaValidationError(exc) from None
    return policy, type_warnings(policy.rules, schemas)


@blueprint.delete("/versions")
@tag(["policies"])
@allow(Role.ADMIN)
@validate_querystring(PolicyPruneQuery)
@validate_response(PolicyPruned)
async def prune_versions(query_args: PolicyPruneQuery) -> PolicyPruned:
    """Remove versions older than `before` that no recorded decision or approval names.

    The version in force is kept, and so are versions replaced in the last ten
    minutes (a decision under one may still be committing). Audited as
    `policy.pruned`."""
    async with runtime().pool.acquire() as conn:
        done = await store.prune(conn, project(), query_args.before, current_actor())
    return PolicyPruned(pruned=done.pruned, kept=done.kept)


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
