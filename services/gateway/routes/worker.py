"""`/v1/worker/*`: the callback API workers use to claim runs and report progress.

Only worker keys reach these routes. Every call after the claim presents the lease (its
epoch and the token the claim returned) and must come from the worker key that claimed
it; anything else gets 409, and the worker drops the run.
"""

from __future__ import annotations

import uuid
from functools import partial

from quart import Blueprint
from quart_schema import hide, validate_request, validate_response

from services.contract.api import Role
from services.contract.runs import RunStatus
from services.contract.worker_api import (
    CatalogueReport,
    ClaimGrant,
    ClaimRequest,
    CompleteReport,
    DeadLetterReport,
    FailReport,
    LeaseBody,
    LeaseInfo,
    ReleaseReport,
    StepAck,
    StepReport,
    ToolAuthorization,
    ToolVerdict,
)
from services.gateway.auth import principal, require_role
from services.gateway.job_deliveries import deliveries_of
from services.gateway.runtime import runtime
from services.gateway.step_fence import Holder
from services.gateway.store import dead_lettered_runs, leases
from services.gateway.store import tools as tool_store
from services.gateway.store.authorizations import authorize_tool

blueprint = Blueprint("worker", __name__, url_prefix="/v1/worker")
require_role(blueprint, Role.WORKER)


def _holder(body: LeaseBody) -> Holder:
    return Holder.of(body, principal().key_id)


@blueprint.post("/runs/<uuid:run_id>/claim")
@hide
@validate_request(ClaimRequest)
@validate_response(ClaimGrant)
async def claim(run_id: uuid.UUID, data: ClaimRequest) -> ClaimGrant:
    res = runtime()
    return await leases.claim(
        res.pool,
        run_id,
        data.worker_id,
        res.settings.lease_seconds,
        principal().key_id,
        agents=res.agent_cache,
        models=res.models,
    )


@blueprint.post("/runs/<uuid:run_id>/heartbeat")
@hide
@validate_request(LeaseBody)
@validate_response(LeaseInfo)
async def heartbeat(run_id: uuid.UUID, data: LeaseBody) -> LeaseInfo:
    res = runtime()
    row = await leases.heartbeat(res.pool, run_id, _holder(data), res.settings.lease_seconds)
    return LeaseInfo(lease_expires_at=row["lease_expires_at"])


@blueprint.post("/runs/<uuid:run_id>/steps")
@hide
@validate_request(StepReport)
@validate_response(StepAck)
async def report_step(run_id: uuid.UUID, data: StepReport) -> StepAck:
    """Record a step; the step carrying the run's answer (`final_output`) completes it."""
    res = runtime()
    return await leases.record_step(
        res.pool, run_id, data, res.settings.lease_seconds, principal().key_id
    )


@blueprint.post("/runs/<uuid:run_id>/complete")
@hide
@validate_request(CompleteReport)
async def complete(run_id: uuid.UUID, data: CompleteReport) -> tuple[str, int]:
    """Complete a resumed run whose last recorded step already is its answer."""
    await leases.finish(
        runtime().pool,
        run_id,
        _holder(data),
        RunStatus.COMPLETED,
        output=data.output,
    )
    return "", 204


@blueprint.post("/runs/<uuid:run_id>/fail")
@hide
@validate_request(FailReport)
async def fail(run_id: uuid.UUID, data: FailReport) -> tuple[str, int]:
    await leases.finish(
        runtime().pool,
        run_id,
        _holder(data),
        RunStatus(data.status),
        error=data.error,
    )
    return "", 204


@blueprint.post("/runs/<uuid:run_id>/release")
@hide
@validate_request(ReleaseReport)
async def release(run_id: uuid.UUID, data: ReleaseReport) -> tuple[str, int]:
    """Hand the run back (a worker shutting down): queued again at once."""
    res = runtime()
    await leases.release(res.pool, run_id, _holder(data), data.reason)
    res.relay.wake()
    return "", 204


@blueprint.post("/runs/<uuid:run_id>/dead-letter")
@hide
@validate_request(DeadLetterReport)
async def dead_letter(run_id: uuid.UUID, data: DeadLetterReport) -> tuple[str, int]:
    """Fail the run of a job delivered too often; the worker then sets the job aside."""
    res = runtime()
    await dead_lettered_runs.dead_letter(
        res.pool,
        run_id,
        data,
        partial(deliveries_of, res.redis, res.settings.streams, data.entry_id, run_id),
        res.settings.max_deliveries,
        principal().key_id,
    )
    return "", 204


@blueprint.post("/runs/<uuid:run_id>/tools/authorize")
@hide
@validate_request(ToolAuthorization)
@validate_response(ToolVerdict)
async def tool_authorize(run_id: uuid.UUID, data: ToolAuthorization) -> ToolVerdict:
    return await authorize_tool(runtime().pool, run_id, data, principal().key_id)


@blueprint.put("/tools")
@hide
@validate_request(CatalogueReport)
async def report_tools(data: CatalogueReport) -> tuple[str, int]:
    await tool_store.replace_catalogue(
        runtime().pool, principal().key_id, data.worker_id, data.tools
    )
    return "", 204
