"""hypercorn's idle-connection close, made to give way to a request that just arrived.

Each connection of hypercorn 0.17 and 0.18 runs an idle task that waits for the server's
`terminated` event (or the keep-alive timeout) and then closes the connection. When a
request arrives, hypercorn cancels that task. If the gateway is told to stop at the same
moment, Python 3.11's `asyncio.wait_for` returns the finished wait and drops the
cancellation (fixed in 3.12), so the connection is closed under a request that is
already being handled: Quart cancels the handler, and a run whose transaction had
committed is created without its client ever getting the 202 (seen once in CI, in
tests/chaos/test_shutdown.py). The replacement checks whether it was cancelled before it
closes; once the request is answered, the connection is idle again and closes then.
"""

from __future__ import annotations

import asyncio
import contextlib

from hypercorn.asyncio.tcp_server import TCPServer


async def _idle_timeout(self: TCPServer) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(self.context.terminated.wait(), self.config.keep_alive_timeout)
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
    await asyncio.shield(self._initiate_server_close())


def let_requests_win_over_idle_close() -> None:
    """Install the replacement; it has the original's shape, so only its ending differs."""
    TCPServer._idle_timeout = _idle_timeout  # type: ignore[method-assign]
