"""The agent loop for one claimed run: ask the model, make the tool calls it asks for
(each decided by the gateway's policy first), feed the results back, until it answers.

Before each model call the loop checks the run's budget itself (`contract.budget`), from
what the claim and the last step's ack said the run has spent: this worker holds the
lease, so nobody else spends in between and the figures are exact. The reply that asks
for no tool is reported as the final step, which completes the run: a one-step run costs
two callbacks, the claim and that step.

Everything the loop knows comes from the claim and goes back as steps, so any worker can
continue any run: after a crash, after a human decided a parked call, or after a lease
moved. While the loop works, a heartbeat keeps the lease alive; the moment the gateway
refuses a callback (run cancelled, lease taken over, budget spent) the loop is cancelled
wherever it is, in the middle of a model or tool call included.

Model calls and idempotent tool calls that fail for a passing reason are made again
within the run's time budget (`llm.py`, `tool_retries.py`); the budget's end is fixed
once per claim, from when the run started.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from datetime import UTC, datetime
from fnmatch import fnmatchcase
from typing import Any

import httpx

from services.contract.budget import Spent, model_call_allowance
from services.contract.runs import StepKind, StepStatus, Usage
from services.contract.tools import ToolSpec
from services.contract.worker_api import (
    ClaimGrant,
    CompleteReport,
    FailReport,
    StepReport,
    ToolAuthorization,
)
from services.worker import metrics
from services.worker.conversation import Conversation, PendingCall, final_answer_of
from services.worker.gateway_client import GatewayClient, LeaseLost
from services.worker.llm import LLM, LLMError
from services.worker.mcp_router import McpRouter
from services.worker.retry import Backoff
from services.worker.tool_names import ToolNames
from services.worker.tool_retries import call_tool

log = logging.getLogger(__name__)


def _now() -> datetime:
    return datetime.now(UTC)


def _deadline(grant: ClaimGrant) -> float | None:
    """When the run's time budget ends, on the `time.monotonic` clock, if it has one (from
    the run's age by the database's clock: the worker's may differ)."""
    limit = grant.agent.budget.max_seconds
    if limit is None:
        return None
    return time.monotonic() + limit - grant.spent.elapsed_seconds


class _Spending:
    """What the run has spent, as the gateway last said (the claim, then each step's ack),
    and its age, advanced on this worker's monotonic clock since then."""

    def __init__(self, spent: Spent) -> None:
        self.usage: Usage = spent.usage
        self._elapsed = spent.elapsed_seconds
        self._since = time.monotonic()

    def update(self, spent: Spent) -> None:
        self.usage = spent.usage
        self._elapsed = spent.elapsed_seconds
        self._since = time.monotonic()

    @property
    def elapsed_seconds(self) -> float:
        return self._elapsed + time.monotonic() - self._since


class _Parked(Exception):
    """A tool call waits for a human; the run is no longer this worker's business."""


class AgentLoop:
    def __init__(
        self,
        gateway: GatewayClient,
        llm: LLM,
        tools: McpRouter,
        heartbeat_seconds: float,
        *,
        tool_backoff: Backoff,
    ) -> None:
        self._gateway = gateway
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
            await self._advance(grant)
        except LeaseLost as exc:
            log.info("run %s dropped: %s", grant.run_id, exc)
        except _Parked:
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
                await self._gateway.heartbeat(grant.run_id, grant.epoch)
            except LeaseLost as exc:
                lost.append(exc)
                work.cancel()
                return
            except httpx.HTTPError as exc:
                # A gateway restarting is no reason to stop beating: the next beat may
                # land while the lease still holds.
                log.warning("heartbeat of run %s failed: %s", grant.run_id, exc)

    def _offered(self, grant: ClaimGrant) -> list[ToolSpec]:
        return [
            spec
            for spec in self._tools.catalogue()
            if any(fnmatchcase(spec.name, allowed) for allowed in grant.agent.tools)
        ]

    async def _advance(self, grant: ClaimGrant) -> None:
        conversation = Conversation(grant)
        offered = self._offered(grant)
        names = ToolNames([spec.name for spec in offered])
        llm_tools = [
            {
                "type": "function",
                "function": {
                    "name": names.for_llm(spec.name),
                    "description": spec.description,
                    "parameters": spec.input_schema or {"type": "object", "properties": {}},
                },
            }
            for spec in offered
        ]
        idempotent = {spec.name for spec in offered if spec.idempotent}
        deadline = _deadline(grant)
        spending = _Spending(grant.spent)
        while True:
            for call in conversation.take_pending():
                await self._tool_call(
                    grant, conversation, spending, names, idempotent, call, deadline
                )
            answer = conversation.final_answer
            if answer is not None:
                # Resumed after the answer was recorded but before the run was completed
                # (a fresh answer completes the run with its step).
                await self._gateway.complete(
                    grant.run_id, CompleteReport(epoch=grant.epoch, output=answer)
                )
                return
            if not await self._model_call(grant, conversation, spending, llm_tools, deadline):
                return

    async def _model_call(
        self,
        grant: ClaimGrant,
        conversation: Conversation,
        spending: _Spending,
        llm_tools: list[dict[str, Any]],
        deadline: float | None,
    ) -> bool:
        """One model call, reported as a step; False when the run ended here: answered
        (the step completed it), over budget, or failed."""
        agent = grant.agent
        seq = conversation.next_seq
        messages = conversation.messages
        started = _now()
        try:
            plan = self._llm.plan(agent.model, messages, llm_tools, agent.params)
        except LLMError as exc:
            await self._model_call_failed(grant, seq, messages, started, exc)
            return False
        allowance = model_call_allowance(
            agent.budget,
            spending.usage,
            seq=seq,
            elapsed_seconds=spending.elapsed_seconds,
            prompt_tokens=plan.prompt_tokens,
            max_output_tokens=plan.max_output_tokens,
            input_cost_per_token=plan.input_cost_per_token,
            output_cost_per_token=plan.output_cost_per_token,
        )
        if allowance.breach is not None:
            log.info("run %s over budget: %s", grant.run_id, allowance.breach)
            await self._gateway.fail(
                grant.run_id,
                FailReport(epoch=grant.epoch, status="budget_exceeded", error=allowance.breach),
            )
            return False
        try:
            reply = await self._llm.complete(
                agent.model,
                messages,
                agent.params,
                tools=llm_tools,
                max_output_tokens=allowance.max_output_tokens,
                deadline=deadline,
            )
        except LLMError as exc:
            await self._model_call_failed(grant, seq, messages, started, exc)
            return False
        answer = final_answer_of(reply.message)
        ack = await self._gateway.report_step(
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
                final_output=answer,
            ),
        )
        spending.update(ack.spent)
        metrics.step(StepKind.LLM_CALL, "completed")
        if answer is not None:
            return False
        conversation.record_reply(reply.message)
        return True

    async def _model_call_failed(
        self,
        grant: ClaimGrant,
        seq: int,
        messages: list[dict[str, Any]],
        started: datetime,
        exc: LLMError,
    ) -> None:
        """Record the failed call as a step and fail the run with the model's error."""
        metrics.step(StepKind.LLM_CALL, "failed")
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

    async def _tool_call(
        self,
        grant: ClaimGrant,
        conversation: Conversation,
        spending: _Spending,
        names: ToolNames,
        idempotent: set[str],
        call: PendingCall,
        deadline: float | None,
    ) -> None:
        """Ask the gateway, then make the call, tell the model it was denied, or park."""
        known = names.from_llm(call.llm_name)
        tool = known or f"unknown.{call.llm_name}"
        try:
            arguments = json.loads(call.raw_arguments)
            valid = isinstance(arguments, dict)
        except json.JSONDecodeError:
            valid = False
        if not valid:
            arguments = {"invalid_arguments": call.raw_arguments[:2000]}
        seq = conversation.seq_for(call)
        verdict = await self._gateway.authorize_tool(
            grant.run_id,
            ToolAuthorization(
                epoch=grant.epoch,
                seq=seq,
                tool=tool,
                tool_call_id=call.tool_call_id,
                arguments=arguments,
                idempotent=tool in idempotent,
            ),
        )
        metrics.tool_verdict(known or "unknown", verdict.verdict)
        if verdict.verdict == "parked":
            metrics.step(StepKind.TOOL_CALL, "parked")
            raise _Parked
        if verdict.verdict == "denied":
            metrics.step(StepKind.TOOL_CALL, "denied")
            content = f"denied by policy: {verdict.decision.explanation}"
            conversation.record_tool_result(call, verdict.seq, content)
            return
        started = _now()
        if valid:
            with metrics.TOOL_DURATION.labels(tool=known or "unknown").time():
                outcome = await call_tool(
                    self._tools,
                    tool,
                    arguments,
                    idempotent=tool in idempotent,
                    backoff=self._tool_backoff,
                    deadline=deadline,
                )
            ok, content = outcome.ok, outcome.content
        else:
            ok, content = False, "the arguments were not a valid JSON object"
        ack = await self._gateway.report_step(
            grant.run_id,
            StepReport(
                epoch=grant.epoch,
                seq=verdict.seq,
                kind=StepKind.TOOL_CALL,
                status=StepStatus.COMPLETED if ok else StepStatus.FAILED,
                tool=tool,
                output=content if ok else None,
                error=None if ok else content[:10_000],
                started_at=started,
                finished_at=_now(),
            ),
        )
        spending.update(ack.spent)
        metrics.step(StepKind.TOOL_CALL, "completed" if ok else "failed")
        conversation.record_tool_result(call, verdict.seq, content if ok else f"error: {content}")
