"""The dead-letter stream as the gateway sees it: how long it is, and dropping a run's
entries once an operator queued that run again.

Workers write the entries (the job as it was, and why it was set aside); PostgreSQL's
`runs.dead_lettered_at` is what says a run is dead-lettered. The stream is the operators'
record of the jobs themselves, so a requeued run's entries are removed from it: what is
left is what still needs someone's attention.
"""

from __future__ import annotations

import uuid

from redis.asyncio import Redis

from services.contract.jobs import StreamNames

_PAGE = 500


async def depth(redis: Redis, streams: StreamNames) -> int:
    """Entries waiting for an operator (0 when no job was ever dead-lettered)."""
    return int(await redis.xlen(streams.dead_letter))


async def forget_run(redis: Redis, streams: StreamNames, run_id: uuid.UUID) -> int:
    """Remove `run_id`'s entries; returns how many. A page at a time, so a long stream
    is never read in one reply."""
    wanted = str(run_id).encode()
    removed = 0
    start = "-"
    while True:
        entries: list[tuple[bytes, dict[bytes, bytes]]] = await redis.xrange(
            streams.dead_letter, min=start, max="+", count=_PAGE
        )  # type: ignore[assignment]
        doomed = [entry_id for entry_id, fields in entries if fields.get(b"run_id") == wanted]
        if doomed:
            removed += int(await redis.xdel(streams.dead_letter, *doomed))
        if len(entries) < _PAGE:
            return removed
        start = "(" + entries[-1][0].decode()
