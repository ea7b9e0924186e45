"""The worker's sense of being CPU-bound: an event loop kept busy reads as late, an idle
one does not, and the reading recovers once the loop is free again."""

from __future__ import annotations

import asyncio
import time

from prometheus_client import REGISTRY

from services.worker.loop_lag import LoopLag


async def _hog(seconds: float, slice_seconds: float) -> None:
    """Keep the loop busy in slices, as runs needing CPU do, yielding between them."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        time.sleep(slice_seconds)  # noqa: ASYNC251 - blocking the loop is the point
        await asyncio.sleep(0)


async def test_an_idle_loop_is_not_busy() -> None:
    lag = LoopLag(interval_seconds=0.01, limit_seconds=0.01)
    lag.start()
    try:
        await asyncio.sleep(0.3)
        assert not lag.busy
        assert lag.seconds < 0.005
    finally:
        await lag.stop()


async def test_a_loop_kept_busy_is_busy_until_it_is_free_again() -> None:
    lag = LoopLag(interval_seconds=0.01, limit_seconds=0.01)
    lag.start()
    try:
        await _hog(0.5, slice_seconds=0.03)
        assert lag.busy
        gauge = REGISTRY.get_sample_value("ferrumdeck_worker_loop_lag_seconds")
        assert gauge is not None
        assert gauge > 0.01
        await asyncio.sleep(0.4)
        assert not lag.busy
    finally:
        await lag.stop()


async def test_one_slow_moment_is_not_enough() -> None:
    """Smoothing: a single long callback (a large JSON body, a GC pause) does not stop a
    worker from taking jobs."""
    lag = LoopLag(interval_seconds=0.01, limit_seconds=0.01)
    lag.start()
    try:
        await asyncio.sleep(0.1)
        time.sleep(0.02)  # noqa: ASYNC251 - one slow callback, on purpose
        await asyncio.sleep(0.002)  # the sampler wakes once, 20 ms late
        assert lag.seconds > 0.003
        assert not lag.busy
    finally:
        await lag.stop()
