"""`/v1/approvals`: humans decide the tool calls policy parked for them."""

from __future__ import annotations

import uuid

from quart import Blueprint
from quart_schema import tag, validate_querystring, validate_request, validate_response

from services.contract.api import (
    Approval,
    ApprovalDecision,
    ApprovalListQuery,
    ApprovalPage,
    BulkApprovalDecision,
    DecidedApprovals,
)
from services.gateway.auth import (
    DECIDERS,
    READERS,
    allow,
    current_actor,
    principal,
    project,
    require_role,
)
from services.gateway.pagination import decode_cursor, paginate
from services.gateway.runtime import runtime
from services.gateway.store import approvals as store

blueprint = Blueprint("approvals", __name__, url_prefix="/v1/approvals")
require_role(blueprint, *READERS)


@blueprint.get("")
@tag(["approvals"])
@validate_querystring(ApprovalListQuery)
@validate_response(ApprovalPage)
async def list_approvals(query_args: ApprovalListQuery) -> ApprovalPage:
    """Approvals, newest first; `?status=pending` for those waiting on a human."""
    before = decode_cursor(query_args.cursor, uuid.UUID)
    items = await store.list_approvals(
        runtime().pool,
        project(),
        status=query_args.status,
        run_id=query_args.run_id,
        before=before,
        limit=query_args.limit + 1,
    )
    page, next_cursor = paginate(items, query_args.limit, lambda a: [str(a.id)])
    return ApprovalPage(items=page, next_cursor=next_cursor)


@blueprint.get("/<uuid:approval_id>")
@tag(["approvals"])
@validate_response(Approval)
async def get_approval(approval_id: uuid.UUID) -> Approval:
    return await store.get_approval(runtime().pool, project(), approval_id)


@blueprint.post("/<uuid:approval_id>/approve")
@tag(["approvals"])
@validate_request(ApprovalDecision)
@validate_response(Approval)
@allow(*DECIDERS)
async def approve(approval_id: uuid.UUID, data: ApprovalDecision) -> Approval:
    """Allow the parked call; the run is re-queued and the next worker makes the call.

    403 `separation_of_duties` when the policy requires another approver than the run's
    creator (`approvals.distinct_approver`): the approval stays pending."""
    return await _decide(approval_id, data, approve=True)


@blueprint.post("/<uuid:approval_id>/reject")
@tag(["approvals"])
@validate_request(ApprovalDecision)
@validate_response(Approval)
@allow(*DECIDERS)
async def reject(approval_id: uuid.UUID, data: ApprovalDecision) -> Approval:
    """Refuse the parked call; the run is re-queued and the model is told why.

    Never restricted by separation of duties: a rejection lets nothing happen."""
    return await _decide(approval_id, data, approve=False)


@blueprint.post("/decide")
@tag(["approvals"])
@validate_request(BulkApprovalDecision)
@validate_response(DecidedApprovals)
@allow(*DECIDERS)
async def decide_many(data: BulkApprovalDecision) -> DecidedApprovals:
    """Approve or reject up to 200 pending approvals with one reason, in one transaction:
    each is audited as if decided alone, and if any cannot be decided (not found 404,
    already decided or expired 409 `approval_decided`, separation of duties 403) none is,
    and the error names it (`details.approval_id`)."""
    res = runtime()
    decided = await store.decide_many(
        res.pool,
        project(),
        data.approval_ids,
        approve=data.approve,
        reason=data.reason,
        actor=current_actor(),
        role=principal().role,
    )
    res.relay.wake()
    return DecidedApprovals(items=decided)


async def _decide(approval_id: uuid.UUID, data: ApprovalDecision, *, approve: bool) -> Approval:
    res = runtime()
    approval = await store.decide(
        res.pool,
        project(),
        approval_id,
        approve=approve,
        reason=data.reason,
        actor=current_actor(),
        role=principal().role,
    )
    res.relay.wake()
    return approval
