"""A small in-process cache that stays coherent with PostgreSQL through notifications.

Why: reads that every request makes (its key, the agent version a run starts) cost a
database round trip each, for rows that almost never change. Caching them in the
process is only correct if every change reaches every gateway before the cached copy is
used again; PostgreSQL's NOTIFY does that (it is sent on commit, to every listening
connection), as long as this process is listening. Hence the rules here:

* **Trusted only while listening.** A cache that depends on notifications answers from
  memory only between `trust()` (the gateway's LISTEN connection is up and listens to
  the cache's channel) and `distrust()` (that connection was lost). Both empty it, since
  notifications sent while nobody listened are gone. Meanwhile every lookup goes to the
  database, as if there were no cache.
* **A fill never undoes an invalidation.** A lookup that read the database before a
  change committed may come back after the change's invalidation ran; it would put the
  old value back for good. Every invalidation bumps a generation, and a fill started
  under an older generation is dropped.
* **Bounded.** Least recently used entries go first, so memory does not grow with the
  number of distinct keys ever seen; an entry may also expire after `ttl_seconds`, which
  bounds staleness should a notification be lost without the connection noticing.
* **Misses are not remembered**: a lookup that found nothing is asked again next time,
  so something created a moment ago (a key, an agent) is found at once everywhere, and
  random guesses cannot fill the cache.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, Protocol, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class Coherent(Protocol):
    """What the gateway's LISTEN connection (`notification_listener`) keeps up to date."""

    @property
    def channel(self) -> str:
        """The notification channel whose payloads invalidate entries."""
        ...

    def on_notify(self, payload: str) -> None:
        """Something changed in the database: drop what `payload` names."""

    def trust(self) -> None:
        """The listener now listens to `channel`: start empty and answer from memory."""

    def distrust(self) -> None:
        """The listener is gone: empty, and send every lookup to the database."""


class CoherentCache(Generic[K, V]):
    """A bounded LRU of values loaded from the database, with the rules above.

    `entries=0` (or `ttl_seconds=0`) disables it: every lookup loads. With
    `needs_listener=False` it is trusted from the start, for values that never change
    (nothing ever needs invalidating).
    """

    def __init__(
        self,
        *,
        entries: int,
        ttl_seconds: float | None = None,
        needs_listener: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._entries = entries
        self._ttl = ttl_seconds
        self._clock = clock
        self._data: OrderedDict[K, tuple[V, float]] = OrderedDict()
        self._generation = 0
        self._trusted = not needs_listener
        self.enabled = entries > 0 and (ttl_seconds is None or ttl_seconds > 0)

    @property
    def trusted(self) -> bool:
        return self.enabled and self._trusted

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key: K) -> bool:
        return self.peek(key) is not None

    def peek(self, key: K) -> V | None:
        """The value memory would answer for `key` now, or None (a miss)."""
        if not self.trusted:
            return None
        found = self._data.get(key)
        if found is None:
            return None
        value, expires = found
        if expires <= self._clock():
            del self._data[key]
            return None
        return value

    async def get(self, key: K, load: Callable[[], Awaitable[V | None]]) -> V | None:
        """The value for `key`: from memory when trusted and fresh, else `load()`ed (and
        remembered, unless an invalidation ran meanwhile or `load` found nothing)."""
        value = self.peek(key)
        if value is not None:
            self._data.move_to_end(key)
            return value
        generation = self._generation
        value = await load()
        if value is not None and generation == self._generation:
            self.put(key, value)
        return value

    def put(self, key: K, value: V) -> None:
        """Remember a value known to be current (ignored while not trusted)."""
        if not self.trusted:
            return
        expires = float("inf") if self._ttl is None else self._clock() + self._ttl
        self._data[key] = (value, expires)
        self._data.move_to_end(key)
        while len(self._data) > self._entries:
            self._data.popitem(last=False)

    def evict(self, key: K) -> None:
        self._generation += 1
        self._data.pop(key, None)

    def evict_where(self, doomed: Callable[[K, V], bool]) -> None:
        """Evict every entry `doomed` names: for invalidations that do not know the key."""
        self._generation += 1
        for key in [k for k, (v, _) in self._data.items() if doomed(k, v)]:
            del self._data[key]

    def clear(self) -> None:
        self._generation += 1
        self._data.clear()

    def trust(self) -> None:
        self.clear()
        self._trusted = True

    def distrust(self) -> None:
        self.clear()
        self._trusted = False
