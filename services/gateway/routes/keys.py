"""`/v1/keys`: a project's API keys. The secret is shown once, when a key is created."""

from __future__ import annotations

import uuid

from quart import Blueprint
from quart_schema import tag, validate_querystring, validate_request, validate_response

from services.contract.api import KeyCreate, KeyCreated, KeyPage, PageQuery, Role
from services.contract.errors import ErrorCode
from services.gateway.auth import current_actor, project, require_role
from services.gateway.errors import BadRequest
from services.gateway.pagination import decode_cursor, paginate
from services.gateway.runtime import runtime
from services.gateway.store import keys as store

blueprint = Blueprint("keys", __name__, url_prefix="/v1/keys")
require_role(blueprint, Role.ADMIN)


@blueprint.post("")
@tag(["keys"])
@validate_request(KeyCreate)
@validate_response(KeyCreated, 201)
async def create_key(data: KeyCreate) -> tuple[KeyCreated, int]:
    """Create a key of this project; worker keys are made with `ferrumdeck keys create`."""
    if data.role == Role.WORKER:
        raise BadRequest("worker keys are created from the server's shell", code=ErrorCode.BAD_ROLE)
    async with runtime().pool.acquire() as conn:
        info, secret = await store.create_key(
            conn, data.name, data.role, project(), current_actor()
        )
    return KeyCreated(**info.model_dump(), secret=secret), 201


@blueprint.get("")
@tag(["keys"])
@validate_querystring(PageQuery)
@validate_response(KeyPage)
async def list_keys(query_args: PageQuery) -> KeyPage:
    """The project's keys, revoked ones too, oldest first; never their secrets."""
    after = decode_cursor(query_args.cursor, uuid.UUID)
    items = await store.list_keys(
        runtime().pool, project(), after=after, limit=query_args.limit + 1
    )
    page, next_cursor = paginate(items, query_args.limit, lambda k: [str(k.id)])
    return KeyPage(items=page, next_cursor=next_cursor)


@blueprint.delete("/<uuid:key_id>")
@tag(["keys"])
async def revoke_key(key_id: uuid.UUID) -> tuple[str, int]:
    """Revoke at once: the next request with this key gets 401."""
    res = runtime()
    await store.revoke_key(res.pool, project(), key_id, current_actor(), cache=res.key_cache)
    return "", 204
