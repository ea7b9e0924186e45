"""Real gateway and worker processes for tests and benchmarks, logging to files we can show."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx


class Service:
    """One `ferrumdeck <command>` process."""

    def __init__(self, command: str, env: dict[str, str], log_path: Path) -> None:
        self.command = command
        self.log_path = log_path
        self._log = log_path.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "services.cli.main", command],
            env={**os.environ, **env},
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 15.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
        return self.process.returncode


async def wait_until(predicate_url: str, within: float, service: Service) -> None:
    """Poll `predicate_url` until it answers 200, failing with the service's log."""
    deadline = time.monotonic() + within
    async with httpx.AsyncClient() as client:
        while time.monotonic() < deadline:
            if service.process.poll() is not None:
                raise AssertionError(f"{service.command} exited early:\n{service.log()}")
            try:
                if (await client.get(predicate_url, timeout=1.0)).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.1)
    raise AssertionError(f"{service.command} not ready after {within}s:\n{service.log()}")


@contextlib.asynccontextmanager
async def serving(
    command: str, env: dict[str, str], log_path: Path, *, ready_url: str, within: float = 30
) -> AsyncIterator[Service]:
    """A process that answers `ready_url`, stopped on the way out; failing with its log
    when it never becomes ready, so nothing runs against a service that is not there."""
    service = Service(command, env, log_path)
    try:
        await wait_until(ready_url, within, service)
        yield service
    finally:
        service.stop()
