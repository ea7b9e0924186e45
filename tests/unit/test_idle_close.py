"""A request that reaches an idle connection as the gateway stops is not cut off.

The race is replayed with hypercorn's own connection class and worker context: the
stop is signalled, and the idle task is cancelled (as hypercorn does when a request
arrives) after every number of loop turns at which the idle task has not yet begun to
close. Python 3.11's `wait_for` drops that cancellation, so hypercorn alone closes the
connection in each of these interleavings.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from hypercorn.asyncio.tcp_server import TCPServer
from hypercorn.asyncio.worker_context import WorkerContext
from hypercorn.config import Config

from services.gateway.idle_close import let_requests_win_over_idle_close

TURNS_BEFORE_THE_IDLE_TASK_CLOSES = 3


@pytest.fixture
def patched_server_class() -> Iterator[None]:
    original = TCPServer._idle_timeout
    let_requests_win_over_idle_close()
    yield
    TCPServer._idle_timeout = original  # type: ignore[method-assign]


async def closes_under_a_request(turns: int) -> bool:
    server = TCPServer.__new__(TCPServer)
    server.config = Config()
    server.context = WorkerContext(None)
    closed: list[bool] = []

    async def close() -> None:
        closed.append(True)

    server._initiate_server_close = close  # type: ignore[method-assign]
    idle = asyncio.create_task(server._idle_timeout())
    await asyncio.sleep(0)
    await server.context.terminated.set()
    for _ in range(turns):
        await asyncio.sleep(0)
    idle.cancel()
    with pytest.raises(asyncio.CancelledError):
        await idle
    return bool(closed)


@pytest.mark.usefixtures("patched_server_class")
@pytest.mark.parametrize("turns", range(TURNS_BEFORE_THE_IDLE_TASK_CLOSES))
async def test_a_request_arriving_as_the_stop_comes_keeps_its_connection(turns: int) -> None:
    assert not await closes_under_a_request(turns)


@pytest.mark.usefixtures("patched_server_class")
async def test_an_idle_connection_still_closes_when_the_gateway_stops() -> None:
    server = TCPServer.__new__(TCPServer)
    server.config = Config()
    server.context = WorkerContext(None)
    closed = asyncio.Event()

    async def close() -> None:
        closed.set()

    server._initiate_server_close = close  # type: ignore[method-assign]
    idle = asyncio.create_task(server._idle_timeout())
    await server.context.terminated.set()
    await asyncio.wait_for(closed.wait(), 5)
    await idle
