"""`FerrumDeck`: the async client driven from plain synchronous code (scripts, the CLI).

It is a thin shell: every method runs the `AsyncFerrumDeck` method of the same name on
a private event loop, so both clients always behave identically. Not for use inside a
running event loop; use `AsyncFerrumDeck` there.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator, Sequence
from datetime import datetime
from types import TracebackType
from typing import Any, Literal

import httpx

from services.client.async_client import AsyncFerrumDeck
from services.contract.api import (
    Agent,
    AgentCreate,
    AgentPage,
    Approval,
    ApprovalPage,
    ApprovalStatus,
    KeyCreated,
    KeyPage,
    PolicyState,
    PolicyVersionWritten,
    Role,
    Run,
    RunPage,
    RunSummary,
    StepPage,
    ToolCatalogue,
)
from services.contract.audit import AuditPage, Verification
from services.contract.policy import EvaluateRequest, PolicyDecision, PolicyRule, PolicySet
from services.contract.queue import QueueStats
from services.contract.runs import RunStatus
from services.contract.threads import Thread, ThreadMessagePage


class FerrumDeck:
    def __init__(
        self,
        url: str | None = None,
        api_key: str | None = None,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout: float = 10.0,
    ) -> None:
        self._runner = asyncio.Runner()
        self._client = AsyncFerrumDeck(url, api_key, transport=transport, timeout=timeout)
        self.url = self._client.url

    def close(self) -> None:
        self._runner.run(self._client.aclose())
        self._runner.close()

    def __enter__(self) -> FerrumDeck:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def agents(self, *, limit: int = 50, cursor: str | None = None) -> AgentPage:
        return self._runner.run(self._client.agents(limit=limit, cursor=cursor))

    def agent_versions(self, name: str, *, limit: int = 50, cursor: str | None = None) -> AgentPage:
        return self._runner.run(self._client.agent_versions(name, limit=limit, cursor=cursor))

    def create_agent(self, spec: AgentCreate) -> Agent:
        return self._runner.run(self._client.create_agent(spec))

    def runs(
        self,
        *,
        status: RunStatus | str | None = None,
        agent: str | None = None,
        dead_lettered: bool | None = None,
        id_ends_with: str | None = None,
        text: str | None = None,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> RunPage:
        return self._runner.run(
            self._client.runs(
                status=status,
                agent=agent,
                dead_lettered=dead_lettered,
                id_ends_with=id_ends_with,
                text=text,
                created_after=created_after,
                created_before=created_before,
                limit=limit,
                cursor=cursor,
            )
        )

    def run_summary(self, *, minutes: int = 15, until: datetime | None = None) -> RunSummary:
        return self._runner.run(self._client.run_summary(minutes=minutes, until=until))

    def iter_runs(
        self,
        *,
        status: RunStatus | str | None = None,
        agent: str | None = None,
        dead_lettered: bool | None = None,
        page: int = 100,
    ) -> Iterator[Run]:
        cursor: str | None = None
        while True:
            found = self.runs(
                status=status,
                agent=agent,
                dead_lettered=dead_lettered,
                limit=page,
                cursor=cursor,
            )
            yield from found.items
            if found.next_cursor is None:
                return
            cursor = found.next_cursor

    def run(self, run_id: uuid.UUID | str) -> Run:
        return self._runner.run(self._client.run(run_id))

    def steps(
        self, run_id: uuid.UUID | str, *, limit: int = 200, cursor: str | None = None
    ) -> StepPage:
        return self._runner.run(self._client.steps(run_id, limit=limit, cursor=cursor))

    def create_run(
        self,
        agent: str,
        input: str | None = None,
        *,
        messages: Sequence[dict[str, Any]] | None = None,
        thread_id: uuid.UUID | str | None = None,
        if_busy: Literal["reject", "enqueue"] = "reject",
        metadata: dict[str, Any] | None = None,
        idempotency_key: str | None = None,
        wait: int | None = None,
    ) -> Run:
        return self._runner.run(
            self._client.create_run(
                agent,
                input,
                messages=messages,
                thread_id=thread_id,
                if_busy=if_busy,
                metadata=metadata,
                idempotency_key=idempotency_key,
                wait=wait,
            )
        )

    def create_thread(self, metadata: dict[str, Any] | None = None) -> Thread:
        return self._runner.run(self._client.create_thread(metadata))

    def thread(self, thread_id: uuid.UUID | str) -> Thread:
        return self._runner.run(self._client.thread(thread_id))

    def thread_messages(
        self, thread_id: uuid.UUID | str, *, limit: int = 200, cursor: str | None = None
    ) -> ThreadMessagePage:
        return self._runner.run(self._client.thread_messages(thread_id, limit=limit, cursor=cursor))

    def wait(self, run_id: uuid.UUID | str, *, timeout: float | None = None) -> Run:
        """The run once it has ended; `TimeoutError` after `timeout` seconds. See
        `AsyncFerrumDeck.wait`."""
        return self._runner.run(asyncio.wait_for(self._client.wait(run_id), timeout))

    def cancel_run(self, run_id: uuid.UUID | str) -> Run:
        return self._runner.run(self._client.cancel_run(run_id))

    def requeue_run(self, run_id: uuid.UUID | str) -> Run:
        return self._runner.run(self._client.requeue_run(run_id))

    def approvals(
        self,
        *,
        status: ApprovalStatus | str | None = None,
        run_id: uuid.UUID | str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> ApprovalPage:
        return self._runner.run(
            self._client.approvals(status=status, run_id=run_id, limit=limit, cursor=cursor)
        )

    def approval(self, approval_id: uuid.UUID | str) -> Approval:
        return self._runner.run(self._client.approval(approval_id))

    def approve(self, approval_id: uuid.UUID | str, reason: str) -> Approval:
        return self._runner.run(self._client.approve(approval_id, reason))

    def reject(self, approval_id: uuid.UUID | str, reason: str) -> Approval:
        return self._runner.run(self._client.reject(approval_id, reason))

    def decide_approvals(
        self, approval_ids: Sequence[uuid.UUID | str], *, approve: bool, reason: str
    ) -> list[Approval]:
        return self._runner.run(
            self._client.decide_approvals(approval_ids, approve=approve, reason=reason)
        )

    def policies(self, *, limit: int = 50, cursor: str | None = None) -> PolicyState:
        return self._runner.run(self._client.policies(limit=limit, cursor=cursor))

    def put_policies(self, rules: list[PolicyRule] | PolicySet) -> PolicyVersionWritten:
        return self._runner.run(self._client.put_policies(rules))

    def evaluate(self, call: EvaluateRequest) -> PolicyDecision:
        return self._runner.run(self._client.evaluate(call))

    def tools(self) -> ToolCatalogue:
        return self._runner.run(self._client.tools())

    def keys(self, *, limit: int = 50, cursor: str | None = None) -> KeyPage:
        return self._runner.run(self._client.keys(limit=limit, cursor=cursor))

    def create_key(self, name: str, role: Role | str) -> KeyCreated:
        return self._runner.run(self._client.create_key(name, role))

    def revoke_key(self, key_id: uuid.UUID | str) -> None:
        self._runner.run(self._client.revoke_key(key_id))

    def queue(self) -> QueueStats:
        return self._runner.run(self._client.queue())

    def audit(
        self,
        *,
        action: str | None = None,
        actor: str | None = None,
        target: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> AuditPage:
        return self._runner.run(
            self._client.audit(
                action=action,
                actor=actor,
                target=target,
                since=since,
                until=until,
                limit=limit,
                cursor=cursor,
            )
        )

    def verify_audit(self) -> Verification:
        return self._runner.run(self._client.verify_audit())
