"""What one gateway process holds open: the pool, the Redis client, its settings.

Nothing here is state another gateway instance would need; it is only connections and
configuration, reachable from request handlers through `resources()`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import asyncpg
from quart import Quart, current_app
from redis.asyncio import Redis

from services.contract.model_catalog import ModelCatalog
from services.gateway.settings import GatewaySettings

if TYPE_CHECKING:
    # Only named here: the loops import metrics, which imports this module.
    from services.gateway.audit import AuditChainer
    from services.gateway.backpressure import Backpressure
    from services.gateway.outbox import OutboxRelay
    from services.gateway.sweeper import Sweeper

_KEY = "ferrumdeck"


@dataclass
class Resources:
    settings: GatewaySettings
    catalog: ModelCatalog
    pool: asyncpg.Pool
    redis: Redis
    relay: OutboxRelay
    sweeper: Sweeper
    chainer: AuditChainer
    backpressure: Backpressure

    def install(self, app: Quart) -> None:
        app.extensions[_KEY] = self


def resources() -> Resources:
    found: Resources = current_app.extensions[_KEY]
    return found
