"""Loops a gateway runs beside its requests (the outbox relay, the sweeper).

Each is stopped by a flag rather than a bare cancel: a cancellation that lands inside a
database or Redis driver call can be absorbed by it (and on Python 3.11 `wait_for` can
swallow one), which would leave shutdown hanging.

Each loop handles the failures it expects (a database or Redis that is away) itself. A
round that fails in a way nobody foresaw is logged and retried after a rest rather than
ending the loop: a loop that died quietly would leave its gateway answering requests
while jobs stop being published or approvals stop expiring, until someone restarts it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from abc import ABC, abstractmethod

log = logging.getLogger(__name__)

_STOP_GRACE_SECONDS = 5.0
_REST_AFTER_CRASH_SECONDS = 5.0


class BackgroundLoop(ABC):
    name = "background"

    def __init__(self) -> None:
        self._wake = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None

    @abstractmethod
    async def step(self) -> float:
        """Do one round of work; return how long to rest before the next (0: at once)."""

    def wake(self) -> None:
        """Cut the current rest short: there is work now."""
        self._wake.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=self.name)

    async def stop(self) -> None:
        """Let the current round finish, then end."""
        if self._task is None:
            return
        self._stopping = True
        self._wake.set()
        try:
            async with asyncio.timeout(_STOP_GRACE_SECONDS):
                await self._task
        except TimeoutError:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while not self._stopping:
            # Cleared before the round, so a wake-up during it is not lost.
            self._wake.clear()
            try:
                rest = await self.step()
            except Exception:
                log.exception(
                    "%s round failed unexpectedly; retrying in %.0fs",
                    self.name,
                    _REST_AFTER_CRASH_SECONDS,
                )
                rest = _REST_AFTER_CRASH_SECONDS
            if rest > 0 and not self._stopping:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(rest):
                        await self._wake.wait()
