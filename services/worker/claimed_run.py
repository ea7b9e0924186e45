"""One run under this worker's lease, from its claim to the end of its turn here: ask the
model, make the tool calls it asks for (each checked against the tool's input schema,
then decided by the gateway's policy), feed the results back, until it answers.

Before each model call the run's budget is checked here (`contract.budget`), from what
the claim and the last step's ack said the run has spent: this worker holds the lease, so
nobody else spends in between and the figures are exact. The reply that asks for no tool
is reported as the final step, which completes the run: a one-step run costs two
callbacks, the claim and that step.

Model calls and idempotent tool calls that fail for a passing reason are made again
within the run's time budget (`llm.py`, `tool_retries.py`); the budget's end is fixed
once per claim, from when the run started.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from typing import Any

from services.contract.budget import Spent, model_call_allowance, reads_prompt_size
from services.contract.runs import StepKind, StepStatus, Usage
from services.contract.worker_api import (
    ClaimGrant,
    CompleteReport,
    FailReport,
    StepReport,
    ToolAuthorization,
    ToolsMissing,
)
from services.worker import metrics
from services.worker.conversation import Conversation, PendingCall, final_answer_of
from services.worker.gateway_client import GatewayClient
from services.worker.llm import LLM, LLMError
from services.worker.mcp_router import Caller, McpRouter
from services.worker.offered_tools import OfferedTools
from services.worker.retry import Backoff
from services.worker.token_stream import TokenStreams
from services.worker.tool_retries import call_tool

log = logging.getLogger(__name__)


class Parked(Exception):
    """A tool call waits for a human; the run is no longer this worker's business."""


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
        self.update(spent)

    def update(self, spent: Spent) -> None:
        self.usage: Usage = spent.usage
        self._elapsed = spent.elapsed_seconds
        self._since = time.monotonic()

    @property
    def elapsed_seconds(self) -> float:
        return self._elapsed + time.monotonic() - self._since


class ClaimedRun:
    def __init__(
        self,
        grant: ClaimGrant,
        gateway: GatewayClient,
        llm: LLM,
        tools: McpRouter,
        *,
        tool_backoff: Backoff,
        tokens: TokenStreams | None = None,
    ) -> None:
        self._grant = grant
        self._tokens = tokens
        self._gateway = gateway
        self._llm = llm
        self._tools = tools
        self._tool_backoff = tool_backoff
        self._conversation = Conversation(grant)
        self._offered = OfferedTools(
            tools.catalogue(), grant.agent.tools, grant.project, tools.unavailable(grant.project)
        )
        self._notes = sum(1 for step in grant.steps if step.kind == StepKind.NOTE)
        self._caller = Caller(grant.project, grant.run_id)
        self._deadline = _deadline(grant)
        self._spending = _Spending(grant.spent)

    async def advance(self) -> None:
        """Work on the run until it ends or waits for a human (`Parked`); a refused
        callback raises `LeaseLost` wherever it comes."""
        if not self._grant.steps and self._offered.missing:
            await self._note_missing_tools()
        while True:
            for call in self._conversation.take_pending():
                await self.tool_call(call)
            answer = self._conversation.final_answer
            if answer is not None:
                # Resumed after the answer was recorded but before the run was completed
                # (a fresh answer completes the run with its step).
                await self._gateway.complete(
                    self._grant.run_id,
                    CompleteReport(
                        epoch=self._grant.epoch,
                        lease_token=self._grant.lease_token,
                        output=answer,
                    ),
                )
                return
            if not await self.model_call():
                return

    async def _note_missing_tools(self) -> None:
        """Say on the run's record, before its first model call, which of the agent's
        tools it goes without (a server down, a tool no server lists): a run that
        completed without them would otherwise look like one that never needed them."""
        missing = ToolsMissing(tools_missing=self._offered.missing)
        log.warning(
            "run %s goes without %s",
            self._grant.run_id,
            ", ".join(f"{m.pattern} ({m.reason})" for m in missing.tools_missing),
        )
        now = _now()
        await self._gateway.report_step(
            self._grant.run_id,
            StepReport(
                epoch=self._grant.epoch,
                lease_token=self._grant.lease_token,
                seq=self._conversation.record_note(),
                kind=StepKind.NOTE,
                status=StepStatus.COMPLETED,
                output=missing.model_dump(mode="json"),
                started_at=now,
                finished_at=now,
            ),
        )
        self._notes += 1
        metrics.step(StepKind.NOTE, "completed")

    async def model_call(self) -> bool:
        """One model call, reported as a step; False when the run ended here: answered
        (the step completed it), over budget, or failed."""
        agent = self._grant.agent
        seq = self._conversation.next_seq
        messages = self._conversation.messages
        functions = self._offered.functions
        started = _now()
        try:
            plan = self._llm.plan(
                agent.model,
                messages,
                functions,
                agent.params,
                count_prompt=reads_prompt_size(agent.budget),
            )
        except LLMError as exc:
            await self._model_call_failed(seq, messages, started, exc)
            return False
        allowance = model_call_allowance(
            agent.budget,
            self._spending.usage,
            seq=seq - self._notes,
            elapsed_seconds=self._spending.elapsed_seconds,
            prompt_tokens=plan.prompt_tokens,
            max_output_tokens=plan.max_output_tokens,
            input_cost_per_token=plan.input_cost_per_token,
            output_cost_per_token=plan.output_cost_per_token,
        )
        if allowance.breach is not None:
            log.info("run %s over budget: %s", self._grant.run_id, allowance.breach)
            await self._gateway.fail(
                self._grant.run_id,
                FailReport(
                    epoch=self._grant.epoch,
                    lease_token=self._grant.lease_token,
                    status="budget_exceeded",
                    error=allowance.breach,
                ),
            )
            return False
        publisher = (
            None
            if self._tokens is None
            else await self._tokens.publisher(
                self._grant.run_id, epoch=self._grant.epoch, seq=seq, requested=self._grant.stream
            )
        )
        try:
            reply = await self._llm.complete(
                agent.model,
                messages,
                agent.params,
                tools=functions,
                max_output_tokens=allowance.max_output_tokens,
                deadline=self._deadline,
                tokens=publisher,
            )
            if publisher is not None:
                await publisher.finish()
        except LLMError as exc:
            await self._model_call_failed(seq, messages, started, exc)
            return False
        finally:
            if publisher is not None:
                await publisher.aclose()
        answer = final_answer_of(reply.message)
        ack = await self._gateway.report_step(
            self._grant.run_id,
            StepReport(
                epoch=self._grant.epoch,
                lease_token=self._grant.lease_token,
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
        self._spending.update(ack.spent)
        metrics.step(StepKind.LLM_CALL, "completed")
        if answer is not None:
            return False
        self._conversation.record_reply(reply.message)
        return True

    async def _model_call_failed(
        self, seq: int, messages: list[dict[str, Any]], started: datetime, exc: LLMError
    ) -> None:
        """Record the failed call as a step and fail the run with the model's error."""
        metrics.step(StepKind.LLM_CALL, "failed")
        await self._gateway.report_step(
            self._grant.run_id,
            StepReport(
                epoch=self._grant.epoch,
                lease_token=self._grant.lease_token,
                seq=seq,
                kind=StepKind.LLM_CALL,
                status=StepStatus.FAILED,
                model=self._grant.agent.model,
                input={"messages": messages},
                error=str(exc)[:10_000],
                started_at=started,
                finished_at=_now(),
            ),
        )
        await self._gateway.fail(
            self._grant.run_id,
            FailReport(
                epoch=self._grant.epoch,
                lease_token=self._grant.lease_token,
                error=f"model call failed: {exc}"[:10_000],
            ),
        )

    async def tool_call(self, call: PendingCall) -> None:
        """Check the arguments against the tool's schema, ask the gateway, then make the
        call, tell the model it was denied (or its arguments refused), or park."""
        known = self._offered.tool(call.llm_name)
        tool = self._offered.recorded_name(call.llm_name)
        idempotent = self._offered.idempotent(tool)
        checked = self._offered.argument_schema(tool).check(call.raw_arguments)
        verdict = await self._gateway.authorize_tool(
            self._grant.run_id,
            ToolAuthorization(
                epoch=self._grant.epoch,
                lease_token=self._grant.lease_token,
                seq=self._conversation.seq_for(call),
                tool=tool,
                tool_call_id=call.tool_call_id,
                arguments=checked.arguments,
                idempotent=idempotent,
                invalid_arguments=checked.refusal,
            ),
        )
        metrics.tool_verdict(known or "unknown", verdict.verdict)
        if verdict.verdict == "parked":
            metrics.step(StepKind.TOOL_CALL, "parked")
            raise Parked
        if verdict.verdict == "denied":
            metrics.step(StepKind.TOOL_CALL, "denied")
            content = f"denied by policy: {verdict.decision.explanation}"
            self._conversation.record_tool_result(call, verdict.seq, content)
            return
        started = _now()
        if known is None:
            # Never made, whatever the gateway said: the model was not shown this tool,
            # so neither its schema nor this run's offer vouches for the call.
            ok, content = False, f"{tool} was not offered to this run; the call was not made"
        elif checked.refusal is None:
            with metrics.TOOL_DURATION.labels(tool=known or "unknown").time():
                outcome = await call_tool(
                    self._tools,
                    tool,
                    checked.arguments,
                    idempotent=idempotent,
                    backoff=self._tool_backoff,
                    deadline=self._deadline,
                    caller=self._caller,
                )
            ok, content = outcome.ok, outcome.content
        else:
            # The gateway settles such a call as refused; whatever it answered, arguments
            # the tool's schema refuses are never sent to its server.
            ok, content = False, checked.refusal
        ack = await self._gateway.report_step(
            self._grant.run_id,
            StepReport(
                epoch=self._grant.epoch,
                lease_token=self._grant.lease_token,
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
        self._spending.update(ack.spent)
        metrics.step(StepKind.TOOL_CALL, "completed" if ok else "failed")
        self._conversation.record_tool_result(
            call, verdict.seq, content if ok else f"error: {content}"
        )
