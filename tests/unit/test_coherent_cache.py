"""The rules that keep an in-process cache honest: trusted only while listening, a fill
never undoes an invalidation, bounded, misses not remembered."""

from __future__ import annotations

import asyncio
import uuid

from services.contract.api import Role
from services.gateway.coherent_cache import CoherentCache
from services.gateway.key_cache import KeyCache
from services.gateway.principal import Principal


class Loads:
    def __init__(self, value: str | None = "v") -> None:
        self.value = value
        self.count = 0

    async def __call__(self) -> str | None:
        self.count += 1
        return self.value


def _trusted(entries: int = 10, ttl: float | None = None) -> CoherentCache[str, str]:
    cache: CoherentCache[str, str] = CoherentCache(entries=entries, ttl_seconds=ttl)
    cache.trust()
    return cache


async def test_nothing_is_remembered_until_trusted_nor_after_distrust() -> None:
    cache: CoherentCache[str, str] = CoherentCache(entries=10)
    load = Loads()
    await cache.get("k", load)
    await cache.get("k", load)
    assert load.count == 2
    cache.trust()
    await cache.get("k", load)
    await cache.get("k", load)
    assert load.count == 3
    cache.distrust()
    assert "k" not in cache
    await cache.get("k", load)
    assert load.count == 4


async def test_trusting_again_starts_empty() -> None:
    cache = _trusted()
    await cache.get("k", Loads())
    cache.trust()  # reconnected: what was missed meanwhile is unknown
    assert len(cache) == 0


async def test_misses_are_not_remembered() -> None:
    cache = _trusted()
    load = Loads(None)
    assert await cache.get("k", load) is None
    assert await cache.get("k", load) is None
    assert load.count == 2


async def test_a_fill_that_raced_an_invalidation_is_dropped() -> None:
    cache = _trusted()
    reading = asyncio.Event()
    release = asyncio.Event()

    async def slow() -> str:
        reading.set()
        await release.wait()
        return "stale"

    fill = asyncio.create_task(cache.get("k", slow))
    await reading.wait()
    cache.evict("k")  # the change committed while the read was under way
    release.set()
    assert await fill == "stale"  # that request saw the old value, as it would anyway
    assert "k" not in cache  # but nobody after it will


async def test_least_recently_used_go_first() -> None:
    cache = _trusted(entries=2)
    await cache.get("a", Loads("A"))
    await cache.get("b", Loads("B"))
    await cache.get("a", Loads("unused"))  # a is now the most recent
    await cache.get("c", Loads("C"))
    assert "a" in cache
    assert "c" in cache
    assert "b" not in cache
    assert len(cache) == 2


async def test_entries_expire() -> None:
    now = [0.0]
    cache: CoherentCache[str, str] = CoherentCache(entries=10, ttl_seconds=5, clock=lambda: now[0])
    cache.trust()
    load = Loads()
    await cache.get("k", load)
    now[0] = 4.9
    await cache.get("k", load)
    assert load.count == 1
    now[0] = 5.0
    await cache.get("k", load)
    assert load.count == 2


async def test_zero_disables() -> None:
    for cache in (
        CoherentCache[str, str](entries=0),
        CoherentCache[str, str](entries=5, ttl_seconds=0),
    ):
        cache.trust()
        load = Loads()
        await cache.get("k", load)
        await cache.get("k", load)
        assert load.count == 2
        assert not cache.trusted


async def test_key_notifications_forget_the_key_they_name() -> None:
    keys = KeyCache(ttl_seconds=60)
    keys.trust()
    kept, revoked = uuid.uuid4(), uuid.uuid4()
    for key_id, key_hash in ((kept, "h1"), (revoked, "h2")):
        principal = Principal(key_id, "n", Role.VIEWER, "default")

        async def load(found: Principal = principal) -> Principal:
            return found

        await keys.principal(key_hash, load)
    keys.on_notify(str(revoked))
    assert keys.cached("h1")
    assert not keys.cached("h2")
    keys.on_notify("garbage")  # unreadable: forget everything rather than keep a revoked key
    assert not keys.cached("h1")
