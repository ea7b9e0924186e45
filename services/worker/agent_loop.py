"""The agent loop: one claimed run at a time per task, worked on while this worker holds
its lease (`claimed_run.py` makes the steps).

Everything the loop knows comes from the claim and goes back as steps, so any worker can
continue any run: after a crash, after a human decided a parked call, or after a lease
moved. While the loop works, a heartbeat keeps the lease alive; the moment the gateway
refuses a callback (run cancelled, lease taken over, budget spent) the loop is cancelled
wherever it is, in the middle of a model or tool call included.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import httpx

from services.contract.worker_api import ClaimGrant
from services.worker.claimed_run import ClaimedRun, Parked
from services.worker.gateway_client import GatewayClient, LeaseLost
from services.worker.llm import LLM
from services.worker.mcp_router import McpRouter
from services.worker.retry import Backoff
from services.worker.token_stream import TokenStreams

log = logging.getLogger(__name__)


class AgentLoop:
    def __init__(
        self,
        gateway: GatewayClient,
        llm: LLM,
        tools: McpRouter,
        heartbeat_seconds: float,
        *,
        tool_backoff: Backoff,
        tokens: TokenStreams | None = None,
    ) -> None:
        """`tokens`: where model calls of watched runs publish their tokens (none: never)."""
        self._gateway = gateway
        self._tokens = tokens
        self._llm = llm
        self._tools = tools
        self._heartbeat_seconds = heartbeat_seconds
        self._tool_backoff = tool_backoff

    async def execute(self, grant: ClaimGrant) -> None:
        """Drive the run to an end, or stop as soon as it is no longer ours."""
        work = asyncio.current_task()
        assert work is not None
        lost: list[LeaseLost] = []
        beat = asyncio.create_task(self._heartbeat(grant, work, lost))
        try:
            run = ClaimedRun(
                grant,
                self._gateway,
                self._llm,
                self._tools,
                tool_backoff=self._tool_backoff,
                tokens=self._tokens,
            )
            await run.advance()
        except LeaseLost as exc:
            log.info("run %s dropped: %s", grant.run_id, exc)
        except Parked:
            log.info("run %s parked for approval", grant.run_id)
        except asyncio.CancelledError:
            if not lost:
                raise
            work.uncancel()
            log.info("run %s dropped: %s", grant.run_id, lost[0])
        finally:
            beat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beat

    async def _heartbeat(
        self, grant: ClaimGrant, work: asyncio.Task[Any], lost: list[LeaseLost]
    ) -> None:
        while True:
            await asyncio.sleep(self._heartbeat_seconds)
            try:
                await self._gateway.heartbeat(grant.run_id, grant.lease)
            except LeaseLost as exc:
                lost.append(exc)
                work.cancel()
                return
            except httpx.HTTPError as exc:
                # A gateway restarting is no reason to stop beating: the next beat may
                # land while the lease still holds.
                log.warning("heartbeat of run %s failed: %s", grant.run_id, exc)
