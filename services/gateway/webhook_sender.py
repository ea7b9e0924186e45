"""Sends due webhook deliveries, retrying on the Standard Webhooks schedule for a day.

Every gateway runs one; they share the work through `take_due` (SKIP LOCKED and a lease
as long as an attempt may take). An attempt is a delivery when the receiver answers 2xx
within the timeout; anything else — another status, a timeout, a refused connection, an
address that is not allowed — is retried after the schedule's next delay, and after its
last the delivery is `failed` (it can still be sent again by hand). The run is read when
it is sent, so the body always shows the run as the API does; a run's ending does not
change once reached.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from datetime import UTC, datetime, timedelta

import asyncpg
import httpx

from services.gateway.background import BackgroundLoop
from services.gateway.store import runs as run_store
from services.gateway.store import webhooks as store
from services.gateway.webhook_addresses import RefusedAddress, check_url
from services.gateway.webhook_signing import signed_headers

log = logging.getLogger(__name__)

_BATCH = 32
_MAX_ERROR = 500


class WebhookSender(BackgroundLoop):
    name = "webhook-sender"

    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        retry_seconds: list[float],
        timeout_seconds: float,
        poll_seconds: float,
        allow_private: bool,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        super().__init__()
        self._pool = pool
        self._retry = [timedelta(seconds=s) for s in retry_seconds]
        self._timeout = timeout_seconds
        self._poll = poll_seconds
        self._allow_private = allow_private
        self._client = httpx.AsyncClient(
            timeout=timeout_seconds, follow_redirects=False, transport=transport
        )

    async def stop(self) -> None:
        await super().stop()
        await self._client.aclose()

    async def step(self) -> float:
        try:
            due = await store.take_due(self._pool, _BATCH, timedelta(seconds=self._timeout * 2 + 5))
        except (OSError, asyncpg.PostgresError) as exc:
            log.warning("webhook deliveries unavailable: %s", exc)
            return self._poll
        if not due:
            return self._poll
        await asyncio.gather(*(self._attempt(delivery) for delivery in due))
        return 0

    async def _attempt(self, delivery: store.DueDelivery) -> None:
        status_code: int | None = None
        error: str | None = None
        try:
            run = await run_store.get_run(self._pool, delivery.project, delivery.run_id)
            body = json.dumps(
                {
                    "type": delivery.event.value,
                    "timestamp": (run.finished_at or datetime.now(UTC)).isoformat(),
                    "data": run.model_dump(mode="json"),
                },
                separators=(",", ":"),
            ).encode()
            await check_url(delivery.url, allow_private=self._allow_private)
            headers = signed_headers(delivery.secret, str(delivery.id), int(time.time()), body)
            response = await self._client.post(delivery.url, content=body, headers=headers)
            status_code = response.status_code
            if not 200 <= status_code < 300:
                error = f"the receiver answered {status_code}"
        except RefusedAddress as exc:
            error = str(exc)
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        attempt = delivery.attempts
        retry_in = self._retry[attempt] if attempt < len(self._retry) else None
        if error is not None:
            log.info("webhook delivery %s attempt %d failed: %s", delivery.id, attempt + 1, error)
        try:
            await store.settle_attempt(
                self._pool,
                delivery.id,
                status_code=status_code,
                error=error[:_MAX_ERROR] if error else None,
                retry_in=retry_in,
            )
        except (OSError, asyncpg.PostgresError) as exc:
            log.warning("webhook delivery %s attempt not recorded: %s", delivery.id, exc)
