"""The Python client of the FerrumDeck gateway, for the TUI, the CLI and integrators.

```python
from services.client import AsyncFerrumDeck

async with AsyncFerrumDeck() as deck:        # URL and key: args > env > .ferrumdeck/dev.env
    run = await deck.create_run("demo", "Hello!")
    async with asyncio.timeout(60):
        done = await deck.wait(run.id)        # never misses a run that ended at once
    async for event in deck.events():         # live, reconnecting by itself
        ...
```

`deck.follow(run_id)` yields the run each time it changes until it ends.
"""

from __future__ import annotations

from services.client.async_client import AsyncFerrumDeck
from services.client.config import ClientConfig, discover
from services.client.errors import (
    ApiError,
    BadRequest,
    ConfigError,
    Conflict,
    FerrumDeckError,
    Forbidden,
    GatewayUnavailable,
    NotFound,
    ServerError,
    TooManyRequests,
    Unauthorized,
    UnprocessableEntity,
)
from services.client.live import CONNECTED, DISCONNECTED, RECONNECTED, LiveEvent
from services.client.sync_client import FerrumDeck

__all__ = [
    "CONNECTED",
    "DISCONNECTED",
    "RECONNECTED",
    "ApiError",
    "AsyncFerrumDeck",
    "BadRequest",
    "ClientConfig",
    "ConfigError",
    "Conflict",
    "FerrumDeck",
    "FerrumDeckError",
    "Forbidden",
    "GatewayUnavailable",
    "LiveEvent",
    "NotFound",
    "ServerError",
    "TooManyRequests",
    "Unauthorized",
    "UnprocessableEntity",
    "discover",
]
