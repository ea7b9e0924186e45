"""Agent versions remembered in the process, so starting and claiming runs skip a read.

Every `POST /v1/runs` and every worker claim resolves an agent version. A version
(`project`, `name`, `version`) never changes once registered, so pinned lookups are
remembered without any invalidation. Which version is the *latest* does change, when a
new one is registered: `store.agents.create_version` forgets it here right after its
transaction commits, and a trigger on `agents` (migration 0007) `pg_notify`s `CHANNEL`
with the project and name of every inserted version, however it was inserted; every
gateway's LISTEN connection (`notification_listener`) passes that to `on_notify`. Latest
versions are answered from memory only while that connection is up (see
`coherent_cache`). Unknown agents are never remembered.

Cached `Agent`s are shared between requests: treat them as read-only.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable

from services.contract.api import Agent
from services.gateway.coherent_cache import CoherentCache

log = logging.getLogger(__name__)

CHANNEL = "ferrumdeck_agents"
ENTRIES = 1024


class AgentCache:
    """Agent versions by (project, name, version), and the latest by (project, name)."""

    channel = CHANNEL

    def __init__(self, entries: int = ENTRIES) -> None:
        self._pinned: CoherentCache[tuple[str, str, int], Agent] = CoherentCache(
            entries=entries, needs_listener=False
        )
        self._latest: CoherentCache[tuple[str, str], Agent] = CoherentCache(entries=entries)

    @property
    def trusted(self) -> bool:
        """Whether latest versions may be answered from memory right now."""
        return self._latest.trusted

    async def version(
        self,
        project: str,
        name: str,
        version: int | None,
        load: Callable[[], Awaitable[Agent | None]],
    ) -> Agent | None:
        """`name@version`, or its latest version for None; `load` reads the database."""
        if version is not None:
            return await self._pinned.get((project, name, version), load)
        agent = await self._latest.get((project, name), load)
        if agent is not None:
            self._pinned.put((project, name, agent.version), agent)
        return agent

    def created(self, project: str, agent: Agent) -> None:
        """`agent` was just committed as the newest version of its name."""
        self._latest.evict((project, agent.name))
        self._pinned.put((project, agent.name, agent.version), agent)

    def on_notify(self, payload: str) -> None:
        try:
            data = json.loads(payload)
            key = (str(data["project"]), str(data["name"]))
        except (ValueError, TypeError, KeyError):
            log.warning("malformed agent notification %r; latest versions forgotten", payload[:200])
            self._latest.clear()
            return
        self._latest.evict(key)

    def trust(self) -> None:
        self._latest.trust()

    def distrust(self) -> None:
        self._latest.distrust()
