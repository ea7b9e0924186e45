"""`AsyncFerrumDeck`: the gateway's public API as typed async methods.

Methods return the contract's models (`services.contract`), so the gateway and every
Python caller agree on one definition of each body. Errors are the client's own
(`services.client.errors`); no httpx exception escapes. Lists come a page at a time
(`runs()`), or as iterators that follow `next_cursor` lazily (`iter_runs()`), so a
caller holding thousands of runs never fetches them all at once.

A caller that stops waiting (its task cancelled: a deck worker replaced by a newer one)
never cancels the HTTP exchange itself: the exchange finishes on its own, bounded by the
client's timeouts, and its answer is dropped. Cancelling one while it waits for a pooled
connection leaks that connection's slot in httpcore (encode/httpcore#1093), and once
every slot is gone each call fails with `PoolTimeout` against a healthy gateway.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Sequence
from datetime import datetime
from types import TracebackType
from typing import Any, Literal, Protocol, TypeVar

import httpx
from pydantic import BaseModel

from services.client.config import discover
from services.client.errors import GatewayUnavailable, error_from_response
from services.client.live import LiveEvent, live_events
from services.client.run_stream import RunStreamItem, stream_run
from services.client.run_watch import follow_run
from services.contract.api import (
    Agent,
    AgentCreate,
    AgentPage,
    Approval,
    ApprovalPage,
    ApprovalStatus,
    DecidedApprovals,
    KeyCreated,
    KeyPage,
    PolicyState,
    PolicyVersionWritten,
    Role,
    Run,
    RunPage,
    RunSummary,
    Step,
    StepPage,
    ToolCatalogue,
)
from services.contract.audit import AuditPage, Verification
from services.contract.policy import EvaluateRequest, PolicyDecision, PolicyRule, PolicySet
from services.contract.queue import QueueStats
from services.contract.runs import RunStatus
from services.contract.threads import Thread, ThreadMessage, ThreadMessagePage

M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")


class _Page(Protocol[T]):
    @property
    def items(self) -> list[T]: ...

    @property
    def next_cursor(self) -> str | None: ...


def _query(**values: Any) -> dict[str, str]:
    """Query parameters, leaving out those not given."""
    out: dict[str, str] = {}
    for name, value in values.items():
        if value is None:
            continue
        if isinstance(value, bool):
            out[name] = "true" if value else "false"
        else:
            out[name] = value.isoformat() if isinstance(value, datetime) else str(value)
    return out


class AsyncFerrumDeck:
    def __init__(
        self,
        url: str | None = None,
        api_key: str | None = None,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout: float = 10.0,
    ) -> None:
        config = discover(url, api_key)
        self.url = config.url
        self._http = httpx.AsyncClient(
            base_url=config.url,
            headers={"Authorization": f"Bearer {config.api_key}"},
            transport=transport,
            timeout=timeout,
        )
        self._abandoned: set[asyncio.Task[httpx.Response]] = set()
        self._watchers: list[Callable[[GatewayUnavailable | None], None]] = []
        self.unreachable: GatewayUnavailable | None = None
        """Why the last call could not reach the gateway; None once a call got an answer
        (any answer, errors included: the gateway is there)."""

    def watch_reachability(self, watcher: Callable[[GatewayUnavailable | None], None]) -> None:
        """Call `watcher` with each transport failure, and with None when the gateway
        answers again: the live feed alone cannot tell that the API is being reached."""
        self._watchers.append(watcher)

    def _reached(self, error: GatewayUnavailable | None) -> None:
        was, self.unreachable = self.unreachable, error
        if error is not None or was is not None:
            for watcher in self._watchers:
                watcher(error)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncFerrumDeck:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def _request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, str] | None = None,
        json: Any = None,
        headers: dict[str, str] | None = None,
        waits: float = 0,
    ) -> httpx.Response:
        """`waits`: seconds the gateway was asked to hold the answer, added to the read
        timeout so a wait the caller asked for is not taken for an unreachable gateway."""
        timeout: Any = httpx.USE_CLIENT_DEFAULT
        if waits:
            default = self._http.timeout
            timeout = httpx.Timeout(
                default.connect,
                read=(default.read or 0) + waits,
                write=default.write,
                pool=default.pool,
            )
        exchange = asyncio.ensure_future(
            self._http.request(
                method, path, params=params, json=json, headers=headers, timeout=timeout
            )
        )
        try:
            response = await asyncio.shield(exchange)
        except asyncio.CancelledError:
            self._abandon(exchange)
            raise
        except httpx.HTTPError as exc:
            # httpx's timeouts carry no message: the type is the cause then.
            error = GatewayUnavailable(
                f"cannot reach the gateway at {self.url}: {str(exc) or type(exc).__name__}"
            )
            self._reached(error)
            raise error from exc
        self._reached(None)
        if response.is_error:
            raise error_from_response(response)
        return response

    def _abandon(self, exchange: asyncio.Task[httpx.Response]) -> None:
        """Let an exchange nobody waits for end by itself; its outcome is dropped (and
        retrieved, so asyncio does not log it as never retrieved)."""
        self._abandoned.add(exchange)
        exchange.add_done_callback(self._forget)

    def _forget(self, exchange: asyncio.Task[httpx.Response]) -> None:
        self._abandoned.discard(exchange)
        if not exchange.cancelled():
            exchange.exception()

    async def _get(self, model: type[M], path: str, **params: Any) -> M:
        response = await self._request("GET", path, params=_query(**params))
        return model.model_validate(response.json())

    async def _post(self, model: type[M], path: str, body: Any = None) -> M:
        response = await self._request("POST", path, json=body)
        return model.model_validate(response.json())

    @staticmethod
    async def _iterate(
        fetch: Callable[[str | None], Awaitable[_Page[T]]],
    ) -> AsyncIterator[T]:
        cursor: str | None = None
        while True:
            page = await fetch(cursor)
            for item in page.items:
                yield item
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    # agents

    async def agents(self, *, limit: int = 50, cursor: str | None = None) -> AgentPage:
        return await self._get(AgentPage, "/v1/agents", limit=limit, cursor=cursor)

    async def agent_versions(
        self, name: str, *, limit: int = 50, cursor: str | None = None
    ) -> AgentPage:
        return await self._get(AgentPage, f"/v1/agents/{name}", limit=limit, cursor=cursor)

    async def create_agent(self, spec: AgentCreate) -> Agent:
        """Register a new immutable version of `spec.name`."""
        return await self._post(Agent, "/v1/agents", spec.model_dump(mode="json"))

    # runs

    async def runs(
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
        """`dead_lettered=True`: only runs failed because their job never finished;
        `id_ends_with`: the runs a short id (an id's end) may mean; `text`: runs whose
        input or output holds it — a search reads within bounds, so a page may be short,
        even empty, and still have a `next_cursor`."""
        return await self._get(
            RunPage,
            "/v1/runs",
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

    async def run_summary(self, *, minutes: int = 15, until: datetime | None = None) -> RunSummary:
        """Counted by the gateway's database: see `GET /v1/runs/summary`."""
        return await self._get(
            RunSummary,
            "/v1/runs/summary",
            minutes=minutes,
            until=until,
        )

    def iter_runs(
        self,
        *,
        status: RunStatus | str | None = None,
        agent: str | None = None,
        dead_lettered: bool | None = None,
        page: int = 100,
    ) -> AsyncIterator[Run]:
        return self._iterate(
            lambda c: self.runs(
                status=status, agent=agent, dead_lettered=dead_lettered, limit=page, cursor=c
            )
        )

    async def run(self, run_id: uuid.UUID | str) -> Run:
        return await self._get(Run, f"/v1/runs/{run_id}")

    async def steps(
        self, run_id: uuid.UUID | str, *, limit: int = 200, cursor: str | None = None
    ) -> StepPage:
        return await self._get(StepPage, f"/v1/runs/{run_id}/steps", limit=limit, cursor=cursor)

    def iter_steps(self, run_id: uuid.UUID | str) -> AsyncIterator[Step]:
        return self._iterate(lambda c: self.steps(run_id, cursor=c))

    async def create_run(
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
        stream: bool = False,
    ) -> Run:
        """Start a run of `input` or of chat `messages`, on a thread if given (while the
        thread has a run open: refused, or with `if_busy="enqueue"` waiting for it). With
        `wait`, the gateway answers once the run finished or parked for an approval, or
        after `wait` seconds (`Prefer: wait`, at most 60), with the run as it is then.
        With `stream`, its tokens are published from its first model call on
        (`stream_run`)."""
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        if wait is not None:
            headers["Prefer"] = f"wait={wait}"
        body: dict[str, Any] = {"agent": agent, "metadata": metadata or {}}
        if input is not None:
            body["input"] = input
        if messages is not None:
            body["messages"] = list(messages)
        if thread_id is not None:
            body["thread_id"] = str(thread_id)
        if if_busy != "reject":
            body["if_busy"] = if_busy
        if stream:
            body["stream"] = True
        response = await self._request(
            "POST", "/v1/runs", json=body, headers=headers or None, waits=wait or 0
        )
        return Run.model_validate(response.json())

    async def create_thread(self, metadata: dict[str, Any] | None = None) -> Thread:
        return await self._post(Thread, "/v1/threads", {"metadata": metadata or {}})

    async def thread(self, thread_id: uuid.UUID | str) -> Thread:
        return await self._get(Thread, f"/v1/threads/{thread_id}")

    async def thread_messages(
        self, thread_id: uuid.UUID | str, *, limit: int = 200, cursor: str | None = None
    ) -> ThreadMessagePage:
        return await self._get(
            ThreadMessagePage, f"/v1/threads/{thread_id}/messages", limit=limit, cursor=cursor
        )

    def iter_thread_messages(self, thread_id: uuid.UUID | str) -> AsyncIterator[ThreadMessage]:
        return self._iterate(lambda c: self.thread_messages(thread_id, cursor=c))

    async def cancel_run(self, run_id: uuid.UUID | str) -> Run:
        return await self._post(Run, f"/v1/runs/{run_id}/cancel")

    async def requeue_run(self, run_id: uuid.UUID | str) -> Run:
        """Queue a dead-lettered run again (`Conflict` `not_dead_lettered` for any other)."""
        return await self._post(Run, f"/v1/runs/{run_id}/requeue")

    def follow(self, run_id: uuid.UUID | str) -> AsyncIterator[Run]:
        """The run each time it changes, until it has ended (the last one yielded). It
        joins the live feed before it first reads the run, so a run that ends at once,
        even before `follow` is called, is never missed; see `services.client.run_watch`."""
        run = uuid.UUID(str(run_id))
        return follow_run(self.events(), lambda: self.run(run), run)

    def stream_run(self, run_id: uuid.UUID | str) -> AsyncGenerator[RunStreamItem, None]:
        """The run's tokens as the model writes them, its steps as they are recorded, and
        its end, resuming by itself after a lost connection; see
        `services.client.run_stream`."""
        return stream_run(self._http, run_id)

    async def wait(self, run_id: uuid.UUID | str) -> Run:
        """The run once it has ended (completed, failed, cancelled, over budget); a run
        waiting for approval is waited for too. Bound it with `asyncio.timeout`."""
        async for run in self.follow(run_id):
            if run.status.terminal:
                return run
        raise AssertionError("follow ends only with a finished run")

    # approvals

    async def approvals(
        self,
        *,
        status: ApprovalStatus | str | None = None,
        run_id: uuid.UUID | str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> ApprovalPage:
        return await self._get(
            ApprovalPage, "/v1/approvals", status=status, run_id=run_id, limit=limit, cursor=cursor
        )

    def iter_approvals(
        self, *, status: ApprovalStatus | str | None = None, page: int = 100
    ) -> AsyncIterator[Approval]:
        return self._iterate(lambda c: self.approvals(status=status, limit=page, cursor=c))

    async def approval(self, approval_id: uuid.UUID | str) -> Approval:
        return await self._get(Approval, f"/v1/approvals/{approval_id}")

    async def approve(self, approval_id: uuid.UUID | str, reason: str) -> Approval:
        return await self._post(
            Approval, f"/v1/approvals/{approval_id}/approve", {"reason": reason}
        )

    async def reject(self, approval_id: uuid.UUID | str, reason: str) -> Approval:
        return await self._post(Approval, f"/v1/approvals/{approval_id}/reject", {"reason": reason})

    async def decide_approvals(
        self, approval_ids: Sequence[uuid.UUID | str], *, approve: bool, reason: str
    ) -> list[Approval]:
        """All of them or none, in one transaction (`POST /v1/approvals/decide`)."""
        body = {
            "approval_ids": [str(i) for i in approval_ids],
            "approve": approve,
            "reason": reason,
        }
        return (await self._post(DecidedApprovals, "/v1/approvals/decide", body)).items

    # policies and tools

    async def policies(self, *, limit: int = 50, cursor: str | None = None) -> PolicyState:
        return await self._get(PolicyState, "/v1/policies", limit=limit, cursor=cursor)

    async def put_policies(self, rules: list[PolicyRule] | PolicySet) -> PolicyVersionWritten:
        """Put a new version in force; its `warnings` name conditions no call a known
        tool accepts can meet (the version is written all the same)."""
        policy = rules if isinstance(rules, PolicySet) else PolicySet(rules=rules)
        response = await self._request("PUT", "/v1/policies", json=policy.model_dump(mode="json"))
        return PolicyVersionWritten.model_validate(response.json())

    async def evaluate(self, call: EvaluateRequest) -> PolicyDecision:
        return await self._post(
            PolicyDecision, "/v1/policies/evaluate", call.model_dump(mode="json")
        )

    async def tools(self) -> ToolCatalogue:
        return await self._get(ToolCatalogue, "/v1/tools")

    # keys (an admin key's)

    async def keys(self, *, limit: int = 50, cursor: str | None = None) -> KeyPage:
        return await self._get(KeyPage, "/v1/keys", limit=limit, cursor=cursor)

    async def create_key(self, name: str, role: Role | str) -> KeyCreated:
        return await self._post(KeyCreated, "/v1/keys", {"name": name, "role": str(role)})

    async def revoke_key(self, key_id: uuid.UUID | str) -> None:
        await self._request("DELETE", f"/v1/keys/{key_id}")

    # operations

    async def queue(self) -> QueueStats:
        return await self._get(QueueStats, "/v1/queue")

    async def audit(
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
        return await self._get(
            AuditPage,
            "/v1/audit",
            action=action,
            actor=actor,
            target=target,
            since=since,
            until=until,
            limit=limit,
            cursor=cursor,
        )

    async def verify_audit(self) -> Verification:
        return await self._get(Verification, "/v1/audit/verify")

    def events(self, *, max_backoff: float = 5.0) -> AsyncGenerator[LiveEvent, None]:
        """The live feed, reconnecting by itself; see `services.client.live`."""
        return live_events(self._http, max_backoff=max_backoff)
