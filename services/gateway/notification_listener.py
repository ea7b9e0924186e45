"""The one PostgreSQL connection per gateway that LISTENs: what keeps revocation
immediate and the live feed live.

Triggers `pg_notify` on commit: run, step and approval changes for the live feed, and
the invalidations of the key and agent caches. Each gateway process holds ONE connection
listening to all of those channels, however many clients watch, reconnecting with
backoff when it drops. Notifications sent while it is down are gone, so a cache is
trusted only while the connection is up and listening to it (emptied when it is lost
and again when it is back), and the feed's subscribers are told to resync after a
reconnection.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import asyncpg

from services.gateway.background import BackgroundLoop
from services.gateway.coherent_cache import Coherent

log = logging.getLogger(__name__)

APPLICATION_NAME = "ferrumdeck-events"  # how the connection shows in pg_stat_activity
_MAX_BACKOFF_SECONDS = 5.0
_KEEPALIVE_SECONDS = 10.0

Handler = Callable[[str], None]


class NotificationListener(BackgroundLoop):
    """Holds the LISTEN connection; `channels` map a channel to what handles its payloads."""

    name = "notification-listener"

    def __init__(self, dsn: str, *, on_reconnect: Callable[[], None]) -> None:
        super().__init__()
        self._dsn = dsn
        self._on_reconnect = on_reconnect
        self._conn: asyncpg.Connection | None = None
        self._backoff = 0.1
        self._ever_connected = False
        self._since_keepalive = 0.0
        self._channels: dict[str, Handler] = {}
        self._caches: list[Coherent] = []

    def listen(self, channel: str, handler: Handler) -> None:
        """Deliver `channel`'s payloads to `handler`; call before `start`."""
        self._channels[channel] = handler

    def keep_coherent(self, cache: Coherent) -> None:
        """Deliver the cache's invalidations and trust it only while listening."""
        self._caches.append(cache)
        self.listen(cache.channel, cache.on_notify)

    async def step(self) -> float:
        if self._conn is not None and not self._conn.is_closed():
            return await self._keepalive()
        if self._conn is not None:
            self._lost(self._conn)
            self._conn = None
        try:
            conn = await asyncpg.connect(
                self._dsn, timeout=5, server_settings={"application_name": APPLICATION_NAME}
            )
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            return self._retry_later(exc)
        try:
            for channel, handler in self._channels.items():
                await conn.add_listener(channel, _delivering(handler))
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            conn.terminate()
            return self._retry_later(exc)
        self._conn = conn
        conn.add_termination_listener(self._lost)
        if conn.is_closed():  # lost before the listener above was in place
            self._conn = None
            return self._retry_later(ConnectionError("listening connection closed at once"))
        # Listening now: whatever changes from here on is announced to the caches.
        for cache in self._caches:
            cache.trust()
        self._backoff = 0.1
        if self._ever_connected:
            log.info("notification listener reconnected")
            self._on_reconnect()
        self._ever_connected = True
        return 1.0

    def _retry_later(self, exc: Exception) -> float:
        log.warning("notification listener cannot connect (retrying): %s", exc)
        self._backoff = min(self._backoff * 2, _MAX_BACKOFF_SECONDS)
        return self._backoff

    async def _keepalive(self) -> float:
        """A dead TCP peer is only noticed when we talk; say something now and then."""
        self._since_keepalive += 1.0
        if self._since_keepalive >= _KEEPALIVE_SECONDS and self._conn is not None:
            self._since_keepalive = 0.0
            try:
                await self._conn.execute("SELECT 1", timeout=5)
            except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
                await self.close()
                return 0.0
        return 1.0

    def _lost(self, conn: Any) -> None:
        """The listening connection closed, by us or not: invalidations may go unheard."""
        if conn is self._conn or self._conn is None:
            for cache in self._caches:
                cache.distrust()

    async def close(self) -> None:
        for cache in self._caches:
            cache.distrust()
        conn, self._conn = self._conn, None
        if conn is not None and not conn.is_closed():
            try:
                await conn.close(timeout=2)
            except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
                conn.terminate()


def _delivering(handler: Handler) -> Callable[[Any, int, str, str], None]:
    def on_notify(_conn: Any, _pid: int, _channel: str, payload: str) -> None:
        handler(payload)

    return on_notify
