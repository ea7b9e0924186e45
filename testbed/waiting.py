"""Waiting, boundedly, for something asynchronous to become true."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


async def eventually(
    probe: Callable[[], Awaitable[T]], accept: Callable[[T], bool], *, within: float = 10.0
) -> T:
    """Call `probe` until `accept` likes its result; return it, or fail with the last one."""
    deadline = time.monotonic() + within
    while True:
        value = await probe()
        if accept(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"still {value!r} after {within}s")
        await asyncio.sleep(0.05)
