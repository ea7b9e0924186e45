"""A worker whose start fails closes what it opened: its MCP server processes, its Redis
and HTTP clients, its background tasks and its signal handlers, and the error that
stopped it is the one raised."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import httpx
import psutil
import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from services.worker import main
from services.worker.gateway_client import GatewayClient
from services.worker.main import run_worker
from services.worker.mcp_router import McpRouter
from services.worker.settings import WorkerSettings

REPO = Path(__file__).resolve().parents[2]
NOBODY = "127.0.0.1:1"  # nothing listens there: connections are refused at once


class SpyRedis(Redis):
    opened: ClassVar[list[SpyRedis]] = []

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.closed = False
        SpyRedis.opened.append(self)

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        self.closed = True
        await super().aclose(close_connection_pool)


class SpyTransport(httpx.AsyncHTTPTransport):
    opened: ClassVar[list[SpyTransport]] = []

    def __init__(self) -> None:
        super().__init__()
        self.closed = False
        SpyTransport.opened.append(self)

    async def aclose(self) -> None:
        self.closed = True
        await super().aclose()


@pytest.fixture
def spies(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The worker's Redis and gateway clients, each noting whether it was closed."""
    SpyRedis.opened, SpyTransport.opened = [], []
    monkeypatch.setattr(main, "Redis", SpyRedis)
    monkeypatch.setattr(
        main,
        "GatewayClient",
        lambda url, token: GatewayClient(url, token, transport=SpyTransport()),
    )
    yield
    assert len(SpyRedis.opened) == len(SpyTransport.opened) == 1


@pytest.fixture
def settings(tmp_path: Path) -> WorkerSettings:
    notes = {
        "command": sys.executable,
        "args": ["-m", "testbed.mcp_servers.notes_server"],
        "env": {"NOTES_FILE": str(tmp_path / "notes.txt")},
        "cwd": str(REPO),
    }
    servers = tmp_path / "mcp.json"
    servers.write_text(json.dumps({"mcpServers": {"notes": notes}}))
    return WorkerSettings(
        worker_token="worker-key",
        url=f"http://{NOBODY}",
        redis_url=f"redis://{NOBODY}/0",
        mcp_servers=servers,
        metrics_port=0,
    )


def notes_servers() -> list[psutil.Process]:
    return [
        child
        for child in psutil.Process().children(recursive=True)
        if "testbed.mcp_servers.notes_server" in child.cmdline()
    ]


def signal_handlers() -> tuple[Any, Any]:
    return signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)


def assert_nothing_left_open(tasks_before: set[asyncio.Task[Any]], handlers: Any) -> None:
    assert [redis.closed for redis in SpyRedis.opened] == [True]
    assert [transport.closed for transport in SpyTransport.opened] == [True]
    assert notes_servers() == []
    assert asyncio.all_tasks() - tasks_before == set()
    assert signal_handlers() == handlers


async def test_a_router_whose_start_fails_leaves_nothing_open(
    settings: WorkerSettings, spies: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    started: list[int] = []
    start = McpRouter.start

    async def start_then_fail(router: McpRouter) -> None:
        await start(router)  # the notes server runs now
        started.extend(child.pid for child in notes_servers())
        raise RuntimeError("the MCP router could not start")

    monkeypatch.setattr(McpRouter, "start", start_then_fail)
    tasks_before, handlers = asyncio.all_tasks(), signal_handlers()
    with pytest.raises(RuntimeError, match=r"^the MCP router could not start$"):
        await run_worker(settings)
    assert len(started) == 1
    assert_nothing_left_open(tasks_before, handlers)


async def test_a_worker_that_cannot_reach_redis_fails_with_that_and_leaves_nothing_open(
    settings: WorkerSettings, spies: None
) -> None:
    tasks_before, handlers = asyncio.all_tasks(), signal_handlers()
    with pytest.raises(RedisConnectionError, match=re.escape(NOBODY)):
        await run_worker(settings)
    assert_nothing_left_open(tasks_before, handlers)
