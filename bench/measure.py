"""Measuring helpers shared by the stack benchmarks: load loops, percentiles, tables.

Every benchmark prints its result as a markdown table headed by the machine it ran on and
how busy that machine was, because on a shared two-core box the load average explains
more of the spread than anything in the code.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import platform
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import psutil


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); NaN for no values, so a table shows a gap."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def ms(values: Sequence[float], q: float) -> str:
    """A percentile of seconds, as milliseconds for a table cell."""
    return f"{percentile(values, q) * 1000:.2f}"


def ratio(ours: float, baseline: float) -> str:
    return f"{ours / baseline:.2f}" if baseline else "n/a"


def cpu_model() -> str:
    with open("/proc/cpuinfo") as info:
        for line in info:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def machine() -> str:
    """Where and when: the line every result table is printed under."""
    load = ", ".join(f"{value:.2f}" for value in os.getloadavg())
    return (
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, nproc={os.cpu_count()}, CPU {cpu_model()}, "
        f"Python {platform.python_version()}, load average {load}"
    )


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A markdown table; numeric columns right-aligned."""
    numeric = [all(_is_number(row[i]) for row in rows) for i in range(len(headers))]
    lines = [
        "| " + " | ".join(headers) + " |",
        "|" + "|".join("---:" if right else "---" for right in numeric) + "|",
    ]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def _is_number(cell: object) -> bool:
    try:
        float(str(cell).replace(",", ""))
    except ValueError:
        return False
    return True


@dataclass
class Series:
    """What a load loop saw: each successful call's latency, and the failures."""

    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    seconds: float = 0.0

    @property
    def rate(self) -> float:
        return len(self.latencies) / self.seconds if self.seconds else 0.0


async def closed_loop(
    clients: Sequence[Callable[[], Awaitable[object]]], seconds: float, warmup: float = 0.5
) -> Series:
    """Each client calls its action back to back for `warmup + seconds`; only calls that
    start after the warm-up are counted (connections opened, caches filled)."""
    series = Series()
    loop = asyncio.get_running_loop()
    start = loop.time() + warmup
    end = start + seconds

    async def client(action: Callable[[], Awaitable[object]]) -> None:
        while (began := loop.time()) < end:
            try:
                await action()
            except Exception:
                if began >= start:
                    series.errors += 1
                continue
            if began >= start:
                series.latencies.append(loop.time() - began)

    await asyncio.gather(*(client(action) for action in clients))
    series.seconds = seconds
    return series


async def open_loop(
    action: Callable[[int], Awaitable[object]], rate: float, seconds: float
) -> Series:
    """Start `action(i)` at a fixed rate whatever the answers' latency, as independent
    users would; returns when every started call has ended."""
    series = Series()
    loop = asyncio.get_running_loop()
    start = loop.time()
    count = int(rate * seconds)

    async def one(i: int) -> None:
        began = loop.time()
        try:
            await action(i)
        except Exception:
            series.errors += 1
            return
        series.latencies.append(loop.time() - began)

    tasks = []
    for i in range(count):
        delay = start + i / rate - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(i)))
    await asyncio.gather(*tasks)
    series.seconds = loop.time() - start
    return series


class CpuMeter:
    """CPU seconds a set of processes used between `start()` and `read()`, as a share of
    one core, so a table shows which process was the bottleneck. With `postgres`, one
    more entry sums every PostgreSQL server process on this machine (backends come and
    go with connections, so they are looked up at both ends); it means something only
    when the benchmark is the server's one user."""

    def __init__(self, pids: dict[str, int], *, postgres: bool = False) -> None:
        self._processes = {name: psutil.Process(pid) for name, pid in pids.items()}
        self._postgres = postgres
        self._before: dict[str, float] = {}
        self._postgres_before: dict[int, float] = {}
        self._started = 0.0

    def _cpu(self, process: psutil.Process) -> float:
        times = process.cpu_times()
        return float(times.user + times.system)

    def _postgres_cpu(self) -> dict[int, float]:
        found = {}
        for process in psutil.process_iter(["name"]):
            if process.info["name"] in ("postgres", "postmaster"):
                with contextlib.suppress(psutil.Error):
                    found[process.pid] = self._cpu(process)
        return found

    def start(self) -> None:
        self._started = time.monotonic()
        self._before = {name: self._cpu(p) for name, p in self._processes.items()}
        if self._postgres:
            self._postgres_before = self._postgres_cpu()

    def read(self) -> dict[str, float]:
        elapsed = time.monotonic() - self._started
        shares = {
            name: (self._cpu(p) - self._before[name]) / elapsed
            for name, p in self._processes.items()
        }
        if self._postgres:
            now = self._postgres_cpu()
            used = sum(cpu - self._postgres_before.get(pid, 0.0) for pid, cpu in now.items())
            shares["postgres"] = used / elapsed
        return shares
