"""The agent loop for one claimed run: call the model, report each step, finish the run.

While the loop works, a heartbeat keeps the lease alive. The moment the gateway refuses a
callback (run cancelled, lease taken over, budget spent) the loop is cancelled wherever it
is, including in the middle of an LLM call.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime
from typing import Any

from services.contract.runs import StepKind, StepStatus
from services.contract.worker_api import ClaimGrant, CompleteReport, FailReport, StepReport
from services.worker.gateway_client import GatewayClient, LeaseLost
from services.worker.llm import LLM, LLMError

log = logging.getLogger(__name__)


def _now() -> datetime:
    return datetime.now(UTC)


def conversation(grant: ClaimGrant) -> list[dict[str, Any]]:
    """The messages so far: system prompt, the run's input, and every finished model reply."""
    messages: list[dict[str, Any]] = []
    if grant.agent.system_prompt:
        messages.append({"role": "system", "content": grant.agent.system_prompt})
    messages.append({"role": "user", "content": grant.input})
    for step in grant.steps:
        if step.kind == StepKind.LLM_CALL and step.status == StepStatus.COMPLETED:
            messages.append(step.output["message"])
    return messages


class AgentLoop:
    def __init__(self, gateway: GatewayClient, llm: LLM, heartbeat_seconds: float) -> None:
        self._gateway = gateway
        self._llm = llm
        self._heartbeat_seconds = heartbeat_seconds

    async def execute(self, grant: ClaimGrant) -> None:
        """Drive the run to an end, or stop as soon as it is no longer ours."""
        work = asyncio.current_task()
        assert work is not None
        lost: list[LeaseLost] = []
        beat = asyncio.create_task(self._heartbeat(grant, work, lost))
        try:
            await self._advance(grant)
        except LeaseLost as exc:
            log.info("run %s dropped: %s", grant.run_id, exc)
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
                await self._gateway.heartbeat(grant.run_id, grant.epoch)
            except LeaseLost as exc:
                lost.append(exc)
                work.cancel()
                return

    async def _advance(self, grant: ClaimGrant) -> None:
        messages = conversation(grant)
        last = messages[-1]
        if last["role"] == "assistant" and not last.get("tool_calls"):
            # A previous holder got the answer recorded but died before completing the
            # run: finish with that answer instead of paying for the call again.
            await self._complete(grant, last.get("content") or "")
            return
        seq = len(grant.steps) + 1
        if seq > grant.agent.budget.max_steps:
            await self._gateway.fail(
                grant.run_id,
                FailReport(
                    epoch=grant.epoch,
                    status="budget_exceeded",
                    error=f"step budget exceeded: max_steps is {grant.agent.budget.max_steps}",
                ),
            )
            return
        started = _now()
        try:
            reply = await self._llm.complete(grant.agent.model, messages, grant.agent.params)
        except LLMError as exc:
            await self._gateway.report_step(
                grant.run_id,
                StepReport(
                    epoch=grant.epoch,
                    seq=seq,
                    kind=StepKind.LLM_CALL,
                    status=StepStatus.FAILED,
                    model=grant.agent.model,
                    input={"messages": messages},
                    error=str(exc)[:10_000],
                    started_at=started,
                    finished_at=_now(),
                ),
            )
            await self._gateway.fail(
                grant.run_id,
                FailReport(epoch=grant.epoch, error=f"model call failed: {exc}"[:10_000]),
            )
            return
        await self._gateway.report_step(
            grant.run_id,
            StepReport(
                epoch=grant.epoch,
                seq=seq,
                kind=StepKind.LLM_CALL,
                status=StepStatus.COMPLETED,
                model=reply.model,
                input={"messages": messages},
                output={"message": reply.message},
                usage=reply.usage,
                started_at=started,
                finished_at=_now(),
            ),
        )
        if reply.message.get("tool_calls"):
            await self._gateway.fail(
                grant.run_id,
                FailReport(
                    epoch=grant.epoch,
                    error="the model asked to call tools, but this agent has none it may use",
                ),
            )
            return
        await self._complete(grant, reply.message.get("content") or "")

    async def _complete(self, grant: ClaimGrant, output: str) -> None:
        await self._gateway.complete(grant.run_id, CompleteReport(epoch=grant.epoch, output=output))
