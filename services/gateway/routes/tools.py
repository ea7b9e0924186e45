"""`/v1/tools`: the tools workers can call for the caller's project, named
`<server>.<tool>`."""

from __future__ import annotations

from quart import Blueprint
from quart_schema import tag, validate_response

from services.contract.api import ToolCatalogue
from services.gateway.auth import READERS, project, require_role
from services.gateway.runtime import runtime
from services.gateway.store import tools as store

blueprint = Blueprint("tools", __name__, url_prefix="/v1/tools")
require_role(blueprint, *READERS)


@blueprint.get("")
@tag(["tools"])
@validate_response(ToolCatalogue)
async def list_tools() -> ToolCatalogue:
    """Every tool some worker offers to the caller's project (shared ones and those of
    servers limited to it): server, tool, description, input schema; the workers and
    worker keys offering it only in the operator's platform view. A worker's tools are
    left out once it has not reported them for five minutes (it died without
    withdrawing them; a live worker reports every minute)."""
    res = runtime()
    items = await store.catalogue(res.pool, project())
    if not res.settings.platform_view:
        items = [item.model_copy(update={"workers": None, "keys": None}) for item in items]
    return ToolCatalogue(items=items)
