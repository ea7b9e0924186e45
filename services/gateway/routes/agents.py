"""`/v1/agents`: register immutable agent versions, list them."""

from __future__ import annotations

from quart import Blueprint
from quart_schema import tag, validate_querystring, validate_request, validate_response

from services.contract.api import Agent, AgentCreate, AgentPage, PageQuery, Role
from services.contract.errors import ErrorCode
from services.gateway.auth import READERS, allow, current_actor, project, require_role
from services.gateway.errors import NotFound, UnprocessableEntity
from services.gateway.pagination import decode_cursor, paginate
from services.gateway.runtime import runtime
from services.gateway.store import agents as store

blueprint = Blueprint("agents", __name__, url_prefix="/v1/agents")
require_role(blueprint, *READERS)


@blueprint.post("")
@tag(["agents"])
@validate_request(AgentCreate)
@validate_response(Agent, 201)
@allow(Role.ADMIN)
async def create_agent(data: AgentCreate) -> tuple[Agent, int]:
    """Register a new immutable version of an agent."""
    res = runtime()
    refusal = res.models.refusal(data.model, project())
    if refusal is not None:
        raise UnprocessableEntity(refusal, code=ErrorCode.UNKNOWN_MODEL)
    async with res.pool.acquire() as conn:
        agent = await store.create_version(
            conn, project(), data, current_actor(), cache=res.agent_cache
        )
    return agent, 201


@blueprint.get("")
@tag(["agents"])
@validate_querystring(PageQuery)
@validate_response(AgentPage)
async def list_agents(query_args: PageQuery) -> AgentPage:
    """The latest version of every agent, by name."""
    after = decode_cursor(query_args.cursor, str)
    items = await store.list_latest(
        runtime().pool, project(), after=after, limit=query_args.limit + 1
    )
    page, next_cursor = paginate(items, query_args.limit, lambda a: [a.name])
    return AgentPage(items=page, next_cursor=next_cursor)


@blueprint.get("/<name>")
@tag(["agents"])
@validate_querystring(PageQuery)
@validate_response(AgentPage)
async def agent_versions(name: str, query_args: PageQuery) -> AgentPage:
    """Every version of one agent, newest first."""
    before = decode_cursor(query_args.cursor, int)
    items = await store.list_versions(
        runtime().pool, project(), name, before=before, limit=query_args.limit + 1
    )
    if not items and before is None:
        raise NotFound(f"no agent {name!r}")
    page, next_cursor = paginate(items, query_args.limit, lambda a: [a.version])
    return AgentPage(items=page, next_cursor=next_cursor)
