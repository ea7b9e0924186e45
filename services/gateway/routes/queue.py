"""`/v1/queue`: the caller's project's runs waiting and running, and whether its runs get
in; the runs stream's backlog and its consumers only where the operator opts in."""

from __future__ import annotations

from quart import Blueprint
from quart_schema import tag, validate_response

from services.contract.queue import QueueStats
from services.gateway.auth import READERS, project, require_role
from services.gateway.queue_stats import queue_stats
from services.gateway.runtime import runtime

blueprint = Blueprint("queue", __name__, url_prefix="/v1/queue")
require_role(blueprint, *READERS)


@blueprint.get("")
@tag(["queue"])
@validate_response(QueueStats)
async def get_queue() -> QueueStats:
    """The project's runs waiting and running, the bounds, whether its runs get in; with
    the operator's opt-in also depth, pending, lag, the oldest pending entry's age and each
    worker's share."""
    res = runtime()
    stats = await queue_stats(res.redis, res.settings.streams)
    return await res.backpressure.describe(stats, project(), platform=res.settings.platform_view)
