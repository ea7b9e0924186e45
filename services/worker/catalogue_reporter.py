"""Keeps the gateway's tool catalogue true for this worker.

The worker reports its tools when it starts, whenever the set changes (an MCP server
came back or went away), and every `refresh` seconds so the gateway can tell live
workers from gone ones; on shutdown it withdraws them.

The gateway authorises a call only for a tool the listing of the worker holding the
run's lease offers to the run's project, so the worker reads no job before its first
report has landed (`reported`), and a change is reported as soon as the router tells of
it (`changed`), not at the next poll: until it lands, a run offered a tool of a server
that has just connected would have its calls of it refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import httpx

from services.contract.tools import ToolSpec
from services.contract.worker_api import CatalogueReport
from services.worker.gateway_client import GatewayClient, LeaseLost
from services.worker.mcp_router import McpRouter

log = logging.getLogger(__name__)

_CHECK_SECONDS = 2.0


class CatalogueReporter:
    def __init__(
        self,
        gateway: GatewayClient,
        router: McpRouter,
        worker_id: str,
        *,
        refresh: float = 60.0,
        changed: asyncio.Event | None = None,
    ) -> None:
        """`changed` is set by whoever learns that the router's catalogue changed."""
        self._gateway = gateway
        self._router = router
        self._worker_id = worker_id
        self._refresh = refresh
        self._changed = changed or asyncio.Event()
        self._reported: list[ToolSpec] | None = None
        self.reported = asyncio.Event()
        """Set once a report has reached the gateway."""

    async def _send(self, tools: list[ToolSpec]) -> bool:
        try:
            await self._gateway.report_tools(
                CatalogueReport(worker_id=self._worker_id, tools=tools)
            )
        except (httpx.HTTPError, LeaseLost) as exc:
            log.warning("could not report the tool catalogue: %s", exc)
            return False
        return True

    async def run(self) -> None:
        last = time.monotonic()
        while True:
            self._changed.clear()
            tools = self._router.catalogue()
            stale = time.monotonic() - last >= self._refresh
            if (tools != self._reported or stale) and await self._send(tools):
                self._reported, last = tools, time.monotonic()
                self.reported.set()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), _CHECK_SECONDS)

    async def withdraw(self) -> None:
        await self._send([])
