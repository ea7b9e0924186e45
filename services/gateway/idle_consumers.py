"""Forgetting the consumers of the runs stream's group that are gone.

A worker joins the group under its id the first time it reads, and Redis keeps the
consumer after the worker has stopped: every `make dev` start (a new `dev-…` id) and
every crashed worker stays listed in `/v1/queue` and the deck for good. A consumer idle
for `IDLE_CONSUMER_SECONDS` with nothing pending is removed (`XGROUP DELCONSUMER`).

Nothing is lost by it. `idle` counts from the consumer's last attempted read (Redis
7.2 and later, Valkey): a live worker tries every `read_block_ms` (a second), and one
that stops reading because it is full or busy holds the entries of its runs, which are
pending, so it is never idle with nothing pending for minutes; were it removed all the
same, the worker joins again within a quarter of `reclaim_idle_seconds`. The check and
the removal are one Lua script, so no read can deliver an entry to a consumer between
the check and the removal: `DELCONSUMER` drops the consumer's pending entries, and that
would lose jobs.

Redis before 7.2 counts `idle` from the last read that delivered something, so a quiet
live worker looks exactly like a dead one; those servers (their `XINFO CONSUMERS` has no
`inactive` field) have no consumer removed at all.
"""

from __future__ import annotations

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from services.contract.jobs import StreamNames
from services.gateway.redis_replies import text

IDLE_CONSUMER_SECONDS = 300.0

# KEYS[1]: the stream; ARGV[1]: the group; ARGV[2]: the least idle time, in ms.
_FORGET = """
local gone = {}
for _, consumer in ipairs(redis.call('XINFO', 'CONSUMERS', KEYS[1], ARGV[1])) do
  local fields = {}
  for i = 1, #consumer, 2 do fields[consumer[i]] = consumer[i + 1] end
  if fields['inactive'] ~= nil and fields['pending'] == 0
      and fields['idle'] >= tonumber(ARGV[2]) then
    redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], fields['name'])
    table.insert(gone, fields['name'])
  end
end
return gone
"""


async def forget_idle_consumers(
    redis: Redis, streams: StreamNames, idle_seconds: float = IDLE_CONSUMER_SECONDS
) -> list[str]:
    """Remove the group's consumers idle this long with nothing pending; their names."""
    try:
        gone = await redis.eval(
            _FORGET, 1, streams.runs, streams.group, str(int(idle_seconds * 1000))
        )
    except ResponseError as exc:
        if "NOGROUP" in str(exc) or "no such key" in str(exc):
            return []  # nothing published or no worker started yet
        raise
    return [text(name) for name in gone]
