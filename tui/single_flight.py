"""`SingleFlight`: a fetch the deck repeats whenever asked, one at a time, never cut short.

Live events ask for the same refetch many times a second. Starting a worker per event
floods the gateway, and a worker that replaces (cancels) the previous one abandons
requests in flight, so neither: a request during a fetch marks it wanted again, and the
running fetch starts once more when it ends. Every ask is answered by a fetch that began
after it, and at most one runs at a time.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from textual.dom import DOMNode


class SingleFlight:
    def __init__(self, owner: DOMNode, fetch: Callable[[], Awaitable[None]], name: str) -> None:
        self._owner = owner
        self._fetch = fetch
        self._name = name
        self._wanted = False
        self._running = False

    def request(self) -> None:
        self._wanted = True
        if not self._running:
            self._running = True
            self._owner.run_worker(self._loop(), name=self._name, group=self._name)

    async def _loop(self) -> None:
        try:
            while self._wanted:
                self._wanted = False
                await self._fetch()
        finally:
            self._running = False
