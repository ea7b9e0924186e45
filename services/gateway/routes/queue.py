"""`/v1/queue`: the runs stream's backlog and its consumers, straight from Redis."""

from __future__ import annotations

from quart import Blueprint
from quart_schema import tag, validate_response

from services.contract.queue import QueueStats
from services.gateway.auth import READERS, require_role
from services.gateway.queue_stats import queue_stats
from services.gateway.runtime import runtime

blueprint = Blueprint("queue", __name__, url_prefix="/v1/queue")
require_role(blueprint, *READERS)


@blueprint.get("")
@tag(["queue"])
@validate_response(QueueStats)
async def get_queue() -> QueueStats:
    """Depth, pending, lag, the oldest pending entry's age, and each worker's share."""
    res = runtime()
    stats = await queue_stats(res.redis, res.settings.streams)
    return await res.backpressure.describe(stats)
