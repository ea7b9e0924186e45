"""How far behind its own event loop a worker is: the signal to stop taking jobs.

A worker holds many runs at once because most of a run is waiting (for the model, a
tool, the gateway). When its runs need CPU instead, because the model answers fast or
the host is small, one process cannot go faster than its one event loop, and every job
it reads on top only queues inside it, while another worker may sit idle: the consumer
group hands an entry to whichever consumer asks first, and a busy worker asks as often
as an idle one. Measured on the benchmark box, one of two workers took nine runs in ten
and ran its event loop flat out while the other idled.

So the consumer asks the loop first. A sampler sleeps a short `interval` again and
again and notes how late it wakes up: on an idle loop that is a fraction of a
millisecond, on a saturated one it is the time the other callbacks keep the loop.
While the smoothed lateness is above `limit`, the consumer reads nothing new and lets
the other workers take the jobs; it still finishes what it holds, and it always reads
when it holds nothing, so a lone worker on a slow host is never stuck.
"""

from __future__ import annotations

import asyncio
import contextlib

from services.worker import metrics

_SMOOTHING = 0.3  # weight of the newest sample: lateness must persist to count


class LoopLag:
    def __init__(self, *, interval_seconds: float = 0.02, limit_seconds: float = 0.01) -> None:
        self._interval = interval_seconds
        self._limit = limit_seconds
        self._task: asyncio.Task[None] | None = None
        self.seconds = 0.0

    @property
    def busy(self) -> bool:
        """Whether the loop has been running late by more than the limit lately."""
        return self.seconds > self._limit

    def start(self) -> None:
        self._task = asyncio.create_task(self._sample(), name="loop-lag")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _sample(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            began = loop.time()
            await asyncio.sleep(self._interval)
            late = max(0.0, loop.time() - began - self._interval)
            self.seconds += _SMOOTHING * (late - self.seconds)
            metrics.LOOP_LAG.set(self.seconds)
