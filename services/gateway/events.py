"""Live change feed for operators: PostgreSQL notifications fanned out to SSE clients.

Triggers (migration 0003) announce every run, step and approval change on one channel,
on commit; the gateway's one listening connection (`notification_listener`) hands each
to the hub, which copies it into every client's bounded queue. A client that cannot keep
up must never slow the others or grow memory without bound: when its queue is full the
queue is emptied and it gets one `resync` event, telling it to refetch what it shows.
The same happens to everyone when the listening connection was lost and re-established,
since notifications sent meanwhile are gone. Once a second the hub also publishes the
runs stream's `queue` statistics.

Which events a client may see is decided in one place, `visible_to`: only its own
project's changes.

The same connection keeps the app's caches coherent (`keep_coherent`) and wakes the
requests that wait for a run to settle (`run_waiters`).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from quart import Quart, current_app
from redis.asyncio import Redis
from redis.exceptions import RedisError

from services.contract.events import PROJECT_EVENTS, EventName
from services.contract.jobs import StreamNames
from services.gateway.background import BackgroundLoop
from services.gateway.backpressure import Backpressure
from services.gateway.coherent_cache import Coherent
from services.gateway.notification_listener import Handler, NotificationListener
from services.gateway.principal import Principal
from services.gateway.queue_stats import queue_stats
from services.gateway.run_waiters import RunWaiters

log = logging.getLogger(__name__)

CHANNEL = "ferrumdeck_events"
_KEY = "ferrumdeck.events"


@dataclass(frozen=True)
class Event:
    """One server-sent event: `event: <name>` and a JSON `data` line."""

    name: str
    data: dict[str, Any] = field(default_factory=dict)

    def encode(self) -> bytes:
        return f"event: {self.name}\ndata: {json.dumps(self.data)}\n\n".encode()


RESYNC = Event(EventName.RESYNC)
CLOSED = Event("closed")  # internal: the hub is stopping; never sent to a client


def visible_to(principal: Principal, event: Event) -> bool:
    """Whether `principal` may see `event`: changes and queue figures only of its own
    project (the triggers and the publisher name it); control events concern everyone."""
    project = event.data.get("project")
    if event.name in PROJECT_EVENTS or event.name == EventName.QUEUE:
        return project is not None and project == principal.project
    return True


class Subscription:
    """One client's bounded queue of events."""

    def __init__(self, principal: Principal, size: int) -> None:
        self.principal = principal
        self._queue: asyncio.Queue[Event] = asyncio.Queue(size)

    def offer(self, event: Event) -> None:
        if event is not CLOSED and not visible_to(self.principal, event):
            return
        try:
            self._queue.put_nowait(event)
        except asyncio.QueueFull:
            self._reset(RESYNC if event is not CLOSED else CLOSED)

    def close(self) -> None:
        self._reset(CLOSED)

    def _reset(self, event: Event) -> None:
        while not self._queue.empty():
            self._queue.get_nowait()
        self._queue.put_nowait(event)

    async def next(self, within: float) -> Event | None:
        """The next event, or None after `within` seconds without one (time for a heartbeat)."""
        try:
            async with asyncio.timeout(within):
                return await self._queue.get()
        except TimeoutError:
            return None


class _QueuePublisher(BackgroundLoop):
    """Publishes the queue figures while anyone is watching: once per project watched,
    each project's own (`Backpressure.describe`)."""

    name = "events-queue"

    def __init__(
        self,
        hub: EventHub,
        redis: Redis,
        streams: StreamNames,
        interval: float,
        backpressure: Backpressure | None,
        platform: bool,
    ) -> None:
        super().__init__()
        self._hub = hub
        self._redis = redis
        self._streams = streams
        self._interval = interval
        self._backpressure = backpressure
        self._platform = platform

    async def step(self) -> float:
        if self._hub.subscribers:
            try:
                stats = await queue_stats(self._redis, self._streams)
            except (OSError, RedisError) as exc:
                log.warning("queue statistics unavailable: %s", exc)
            else:
                for project in self._hub.projects_watched():
                    if self._backpressure is not None:
                        view = await self._backpressure.describe(
                            stats, project, platform=self._platform
                        )
                    else:
                        view = stats.model_copy(update={"project": project})
                    self._hub.broadcast(Event(EventName.QUEUE, view.model_dump(mode="json")))
        return self._interval


class EventHub:
    """The fan-out: one listener and one statistics loop per process, many subscribers."""

    def __init__(
        self,
        dsn: str,
        redis: Redis,
        streams: StreamNames,
        *,
        queue_interval_seconds: float = 1.0,
        heartbeat_seconds: float = 15.0,
        buffer: int = 1000,
        backpressure: Backpressure | None = None,
        platform_view: bool = False,
        also: Mapping[str, Handler] | None = None,
    ) -> None:
        """`also` maps other channels to what handles their payloads, on the same one
        listening connection."""
        self.heartbeat_seconds = heartbeat_seconds
        self._buffer = buffer
        self._subscriptions: set[Subscription] = set()
        self.waiters = RunWaiters()
        self._listener = NotificationListener(dsn, on_reconnect=lambda: self.broadcast(RESYNC))
        self._listener.listen(CHANNEL, self._on_notify)
        for channel, handler in (also or {}).items():
            self._listener.listen(channel, handler)
        self._publisher = _QueuePublisher(
            self, redis, streams, queue_interval_seconds, backpressure, platform_view
        )

    @property
    def subscribers(self) -> int:
        return len(self._subscriptions)

    def projects_watched(self) -> set[str]:
        return {s.principal.project for s in self._subscriptions if s.principal.project}

    def install(self, app: Quart) -> None:
        app.extensions[_KEY] = self

    def keep_coherent(self, *caches: Coherent) -> None:
        """Have the listening connection keep `caches` coherent; call before `start`."""
        for cache in caches:
            self._listener.keep_coherent(cache)

    def start(self) -> None:
        self._listener.start()
        self._publisher.start()

    def close_streams(self) -> None:
        """End every client's stream: called as shutdown begins, so open streams do not
        hold the server's graceful drain for its whole timeout."""
        for subscription in self._subscriptions:
            subscription.close()
        self.waiters.close_watchers()

    async def stop(self) -> None:
        """End every client's stream, then the loops and the listening connection."""
        self.close_streams()
        await self._publisher.stop()
        await self._listener.stop()
        await self._listener.close()

    def _on_notify(self, payload: str) -> None:
        try:
            data = json.loads(payload)
        except ValueError:
            log.warning("ignoring malformed notification %r", payload[:200])
            return
        self.broadcast(Event(str(data.get("type", "unknown")), data))

    def subscribe(self, principal: Principal) -> Subscription:
        subscription = Subscription(principal, self._buffer)
        self._subscriptions.add(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        self._subscriptions.discard(subscription)

    def broadcast(self, event: Event) -> None:
        self.waiters.notice(event.name, event.data)
        for subscription in self._subscriptions:
            subscription.offer(event)


def hub_of(app: Quart) -> EventHub | None:
    found: EventHub | None = app.extensions.get(_KEY)
    return found


def event_hub() -> EventHub:
    found: EventHub = current_app.extensions[_KEY]
    return found
