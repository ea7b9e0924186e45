"""Reading and writing a Redis stream in tests and benchmarks, typed.

redis-py types every stream reply as a union of everything any client configuration
could return; the clients here never decode, so entries are bytes ids and bytes fields.
Saying so once keeps the suites type-checked without a cast at every call."""

from __future__ import annotations

from collections.abc import Mapping
from typing import cast

from redis.asyncio import Redis
from redis.typing import EncodableT, FieldT

Entry = tuple[bytes, dict[bytes, bytes]]


async def append(redis: Redis, stream: str, fields: Mapping[str, str | bytes]) -> bytes:
    """Add an entry (`XADD`) and return its id. redis-py asks for a `dict` keyed and
    valued by its own unions, and as `dict` is invariant no `dict[str, str]` is one."""
    body: dict[FieldT, EncodableT] = {key: value for key, value in fields.items()}
    return cast(bytes, await redis.xadd(stream, body))


async def entries(redis: Redis, stream: str) -> list[Entry]:
    """Every entry of `stream`, oldest first (`XRANGE - +`)."""
    return cast(list[Entry], await redis.xrange(stream))


async def read_new(
    redis: Redis,
    group: str,
    consumer: str,
    stream: str,
    count: int,
    *,
    block_ms: int | None = None,
) -> list[Entry]:
    """Up to `count` entries never delivered to `group`, now delivered to `consumer`;
    with `block_ms`, waiting that long for one when there is none yet."""
    reply = await redis.xreadgroup(group, consumer, {stream: ">"}, count=count, block=block_ms)
    batches = cast(list[tuple[bytes, list[Entry]]], reply or [])
    return [entry for _, batch in batches for entry in batch]
