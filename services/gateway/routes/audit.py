"""`/v1/audit`: browse the project's audit trail and verify its hash chain."""

from __future__ import annotations

from pydantic import BaseModel, Field
from quart import Blueprint
from quart_schema import tag, validate_querystring, validate_response

from services.contract.audit import AuditPage, Verification
from services.contract.audit_checkpoint import (
    Checkpoint,
    CheckpointError,
    CheckpointSigner,
    check_signature,
)
from services.contract.moments import Moment
from services.gateway import audit
from services.gateway.auth import READERS, project, require_role
from services.gateway.errors import UnprocessableEntity
from services.gateway.pagination import decode_cursor, paginate
from services.gateway.runtime import runtime
from services.gateway.store import audit_trail

blueprint = Blueprint("audit", __name__, url_prefix="/v1/audit")
require_role(blueprint, *READERS)


class AuditQuery(BaseModel):
    action: str | None = Field(default=None, max_length=100, description="e.g. run or run.created")
    actor: str | None = Field(default=None, max_length=200, description="substring of the actor")
    target: str | None = Field(default=None, max_length=200, description="e.g. run:<id>")
    since: Moment | None = None
    until: Moment | None = None
    limit: int = Field(default=50, ge=1, le=500)
    cursor: str | None = Field(default=None, max_length=200)


@blueprint.get("")
@tag(["audit"])
@validate_querystring(AuditQuery)
@validate_response(AuditPage)
async def list_events(query_args: AuditQuery) -> AuditPage:
    """Events, newest first, with their chain links once linked."""
    items = await audit_trail.list_events(
        runtime().pool,
        project(),
        filters=query_args.model_dump(include={"action", "actor", "target", "since", "until"}),
        before=decode_cursor(query_args.cursor, int),
        limit=query_args.limit + 1,
    )
    page, next_cursor = paginate(items, query_args.limit, lambda e: [e.id])
    return AuditPage(items=page, next_cursor=next_cursor)


class VerifyQuery(BaseModel):
    since_checkpoint: str | None = Field(
        default=None,
        max_length=4000,
        description="A checkpoint (`ferrumdeck audit checkpoint` prints it as `token`): the "
        "chain must still hold its head, and is checked from there on.",
    )


@blueprint.get("/verify")
@tag(["audit"])
@validate_querystring(VerifyQuery)
@validate_response(Verification)
async def verify(query_args: VerifyQuery) -> Verification:
    """Recompute the project's chain: intact, or the first broken link or the
    checkpointed head it no longer has."""
    chainer = runtime().chainer
    since = None
    if query_args.since_checkpoint is not None:
        since = _checkpoint(query_args.since_checkpoint, chainer.signer)
    return await audit.verify_project(runtime().pool, project(), chainer.keys, since=since)


def _checkpoint(token: str, signer: CheckpointSigner | None) -> Checkpoint:
    if signer is None:
        raise UnprocessableEntity(
            "this gateway has no checkpoint key to check a checkpoint with "
            "(FERRUMDECK_AUDIT_SIGNING_KEY_FILE)"
        )
    try:
        checkpoint = Checkpoint.from_token(token)
        check_signature(checkpoint, signer.public)
    except CheckpointError as exc:
        raise UnprocessableEntity(str(exc)) from None
    if checkpoint.project != project():
        raise UnprocessableEntity(
            f"the checkpoint is of project {checkpoint.project!r}, not this one"
        )
    return checkpoint
