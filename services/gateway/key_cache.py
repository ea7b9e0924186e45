"""Who a key is, remembered for a few seconds so requests skip the key lookup.

Every request names its key; looking it up was a database round trip per request, a
sizeable part of the gateway's CPU. Keys are created and revoked, never changed, so what
a valid key stands for (id, name, role, project) can be remembered by its hash. The one
change that matters, revocation, must still take effect on the very next request:

* `store.keys.revoke_key` evicts the key here right after its transaction commits, and
  a trigger on `api_keys` (migration 0007) `pg_notify`s `CHANNEL` with the id of every
  key updated or deleted, however it was done (an operator's UPDATE in psql included),
  which every gateway's LISTEN connection (`notification_listener`) passes to `on_notify`;
* while that connection is down, or just re-established (notifications may have been
  missed), nothing is answered from memory: see `coherent_cache`.

Entries also expire after `key_cache_seconds` (0: no cache), which bounds how long a
lost notification could go unnoticed. Unknown keys are never remembered, so failed
authentications still reach the database and are counted, and a key created a moment
ago works at once on every gateway. Only hashes are kept, never secrets.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable

from services.gateway.coherent_cache import CoherentCache
from services.gateway.principal import Principal

log = logging.getLogger(__name__)

CHANNEL = "ferrumdeck_keys"
ENTRIES = 4096


class KeyCache:
    """Principals by key hash, for this gateway process (one per app)."""

    channel = CHANNEL

    def __init__(self, ttl_seconds: float, entries: int = ENTRIES) -> None:
        self._cache: CoherentCache[str, Principal] = CoherentCache(
            entries=entries, ttl_seconds=ttl_seconds
        )

    @property
    def trusted(self) -> bool:
        """Whether lookups may be answered from memory right now."""
        return self._cache.trusted

    def cached(self, key_hash: str) -> bool:
        return key_hash in self._cache

    async def principal(
        self, key_hash: str, load: Callable[[], Awaitable[Principal | None]]
    ) -> Principal | None:
        """The valid key with this hash, or None; `load` reads it from the database."""
        return await self._cache.get(key_hash, load)

    def forget(self, key_id: uuid.UUID) -> None:
        """The key was revoked: the next request with it must reach the database."""
        self._cache.evict_where(lambda _hash, principal: principal.key_id == key_id)

    def on_notify(self, payload: str) -> None:
        try:
            key_id = uuid.UUID(payload)
        except ValueError:
            # Cannot tell which key: forget them all rather than keep a revoked one.
            log.warning("malformed key notification %r; key cache emptied", payload[:100])
            self._cache.clear()
            return
        self.forget(key_id)

    def trust(self) -> None:
        self._cache.trust()

    def distrust(self) -> None:
        self._cache.distrust()
