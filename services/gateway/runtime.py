"""What one gateway process holds open: the pool, the Redis client, its settings.

Nothing here is state another gateway instance would need; it is only connections,
configuration and caches of database rows (kept coherent through notifications, see
`coherent_cache`), reachable from request handlers through `runtime()`. The caches
belong to the app, not the module: several apps in one process (tests) may point at
different databases.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import asyncpg
from quart import Quart, current_app
from redis.asyncio import Redis

from services.gateway.agent_cache import AgentCache
from services.gateway.audit import AuditChainer
from services.gateway.backpressure import Backpressure
from services.gateway.key_cache import KeyCache
from services.gateway.model_access import ModelAccess
from services.gateway.outbox import OutboxRelay
from services.gateway.run_intake import RunIntake
from services.gateway.run_stream import StreamSlots
from services.gateway.settings import GatewaySettings
from services.gateway.sweeper import Sweeper
from services.gateway.webhook_sender import WebhookSender

_KEY = "ferrumdeck"


@dataclass
class Runtime:
    settings: GatewaySettings
    models: ModelAccess
    pool: asyncpg.Pool
    redis: Redis
    relay: OutboxRelay
    sweeper: Sweeper
    chainer: AuditChainer
    backpressure: Backpressure
    run_intake: RunIntake
    webhook_sender: WebhookSender
    key_cache: KeyCache = field(init=False)
    agent_cache: AgentCache = field(init=False)
    stream_slots: StreamSlots = field(init=False)
    stream_redis: Redis = field(init=False)
    """Run streams' own client: each open stream holds a connection in its `XREAD`, and
    they must never take the connections the relay and the intake need (a shared pool
    of redis-py's default size ran out at 200 open streams and stalled the relay)."""

    def __post_init__(self) -> None:
        self.key_cache = KeyCache(self.settings.key_cache_seconds)
        self.agent_cache = AgentCache(self.settings.agent_cache_entries)
        self.stream_slots = StreamSlots(self.settings.max_run_streams)
        self.stream_redis = Redis.from_url(
            self.settings.redis_url, max_connections=2 * self.settings.max_run_streams + 8
        )

    async def close_redis(self) -> None:
        await self.redis.aclose()
        await self.stream_redis.aclose()

    def install(self, app: Quart) -> None:
        app.extensions[_KEY] = self


def runtime() -> Runtime:
    found: Runtime = current_app.extensions[_KEY]
    return found
