"""Keeps the gateway's tool catalogue true for this worker.

The worker reports its tools when it starts, whenever the set changes (an MCP server
came back or went away), and every `refresh` seconds so the gateway can tell live
workers from gone ones; on shutdown it withdraws them.
"""

from __future__ import annotations

import asyncio
import logging

import httpx

from services.contract.tools import ToolSpec
from services.contract.worker_api import CatalogueReport
from services.worker.gateway_client import GatewayClient, LeaseLost
from services.worker.mcp_router import McpRouter

log = logging.getLogger(__name__)

_CHECK_SECONDS = 2.0


class CatalogueReporter:
    def __init__(
        self, gateway: GatewayClient, router: McpRouter, worker_id: str, *, refresh: float = 60.0
    ) -> None:
        self._gateway = gateway
        self._router = router
        self._worker_id = worker_id
        self._refresh = refresh
        self._reported: list[ToolSpec] | None = None

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
        since = 0.0
        while True:
            tools = self._router.catalogue()
            if (tools != self._reported or since >= self._refresh) and await self._send(tools):
                self._reported, since = tools, 0.0
            await asyncio.sleep(_CHECK_SECONDS)
            since += _CHECK_SECONDS

    async def withdraw(self) -> None:
        await self._send([])
