"""The worker's side of token streaming, on a real Redis: who gets a publisher, how
many writes an answer costs, and what a retried call leaves in the run's stream."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from redis.asyncio import Redis

from services.contract.jobs import StreamNames
from services.worker.token_stream import TokenStreams, TokenStreamSettings


async def _entries(redis: Redis, key: str) -> list[dict[str, str]]:
    found: Any = await redis.xrange(key)
    return [{k.decode(): v.decode() for k, v in fields.items()} for _, fields in found]


async def test_only_a_run_that_asked_or_is_followed_gets_a_publisher(
    redis: Redis, prefix: str
) -> None:
    streams = StreamNames(prefix)
    tokens = TokenStreams(redis, streams)
    run_id = uuid.uuid4()
    assert await tokens.publisher(run_id, epoch=1, seq=1, requested=False) is None
    assert await tokens.publisher(run_id, epoch=1, seq=1, requested=True) is not None
    await redis.set(streams.run_watched(run_id), b"1", ex=30)
    assert await tokens.publisher(run_id, epoch=1, seq=1, requested=False) is not None


async def test_a_thousand_token_answer_costs_a_bounded_number_of_writes(
    redis: Redis, prefix: str
) -> None:
    streams = StreamNames(prefix)
    settings = TokenStreamSettings(flush_seconds=0.03, ttl_seconds=120)
    run_id = uuid.uuid4()
    publisher = await TokenStreams(redis, streams, settings).publisher(
        run_id, epoch=3, seq=2, requested=True
    )
    assert publisher is not None
    words = [f" w{n}" for n in range(1000)]
    loop = asyncio.get_running_loop()
    started = loop.time()
    for n, word in enumerate(words):
        publisher.write(word)
        # Each chunk is read from the network; ~1,000 tokens in about half a second.
        await asyncio.sleep(0.005 if n % 10 == 9 else 0)
    await publisher.finish()
    seconds = loop.time() - started
    entries = await _entries(redis, streams.run_tokens(run_id))
    assert "".join(e["delta"] for e in entries) == "".join(words)
    assert entries[0]["delta"] == words[0], "the first token is written at once"
    assert {(e["step"], e["epoch"], e["attempt"]) for e in entries} == {("2", "3", "1")}
    assert publisher.writes == len(entries) <= seconds / settings.flush_seconds + 2
    assert 0 < await redis.ttl(streams.run_tokens(run_id)) <= 120


async def test_a_retried_call_writes_its_text_again_under_the_next_attempt(
    redis: Redis, prefix: str
) -> None:
    streams = StreamNames(prefix)
    run_id = uuid.uuid4()
    publisher = await TokenStreams(redis, streams).publisher(run_id, epoch=1, seq=1, requested=True)
    assert publisher is not None
    publisher.write("Hel")
    await asyncio.sleep(0.05)
    publisher.restart()
    publisher.write("Hello")
    await publisher.finish()
    entries = await _entries(redis, streams.run_tokens(run_id))
    assert [(e["attempt"], e["delta"]) for e in entries] == [("1", "Hel"), ("2", "Hello")]
