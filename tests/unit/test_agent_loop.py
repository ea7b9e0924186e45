"""The agent loop with no database and no gateway process: the worker API is answered by
an `httpx.MockTransport` that records every callback, the model is real LiteLLM talking
to the scripted OpenAI-compatible server, and tools are called on the notes MCP server
over stdio."""

from __future__ import annotations

import asyncio
import json
import secrets
import sys
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import httpx
import pytest

from services.contract.budget import Spent
from services.contract.model_catalog import ModelCatalog
from services.contract.policy import Effect, PolicyDecision
from services.contract.runs import Budget, ModelParams, StepStatus, Usage
from services.contract.worker_api import (
    AgentSpec,
    ClaimGrant,
    LeaseInfo,
    StepAck,
    ToolVerdict,
)
from services.devstack.demo_llm import Reply
from services.worker.agent_loop import AgentLoop
from services.worker.gateway_client import GatewayClient
from services.worker.llm import LLM
from services.worker.mcp_config import StdioServer
from services.worker.mcp_router import McpRouter
from services.worker.retry import Backoff
from testbed.waiting import eventually
from tests.support.scripted_llm import ScriptedLLM

REPO = Path(__file__).resolve().parents[2]
QUICK = Backoff(3, 0.01, 0.05)
Verdict = Literal["execute", "denied", "parked"]


@dataclass
class FakeGateway:
    """The worker API of one run, answered as the gateway would, every callback noted.
    Tools are executed unless `verdicts` says otherwise; `refuse` lists the actions
    answered 409, as the gateway answers a worker whose lease was taken over. A callback
    without the claim's lease token is refused as the gateway refuses it."""

    prompt: str
    budget: Budget = field(default_factory=Budget)
    verdicts: dict[str, Verdict] = field(default_factory=dict)
    refuse: set[str] = field(default_factory=set)
    run_id: uuid.UUID = field(default_factory=uuid.uuid4)
    sent: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    usage: Usage = field(default_factory=Usage)
    lease_token: str = field(default_factory=lambda: secrets.token_urlsafe(32))

    def handle(self, request: httpx.Request) -> httpx.Response:
        action = request.url.path.removeprefix(f"/v1/worker/runs/{self.run_id}/")
        body: dict[str, Any] = json.loads(request.content)
        self.sent.append((action, body))
        if action in self.refuse:
            error = {"code": "stale_epoch", "message": "another worker holds the run"}
            return httpx.Response(409, json={"error": error})
        if action != "claim" and body.get("lease_token") != self.lease_token:
            error = {"code": "lease_held", "message": "held by another claim"}
            return httpx.Response(409, json={"error": error})
        if action == "claim":
            return httpx.Response(200, json=self._grant().model_dump(mode="json"))
        if action == "heartbeat":
            return httpx.Response(
                200, json=LeaseInfo(lease_expires_at=_soon()).model_dump(mode="json")
            )
        if action == "steps":
            return httpx.Response(200, json=self._ack(body).model_dump(mode="json"))
        if action == "tools/authorize":
            return httpx.Response(200, json=self._verdict(body).model_dump(mode="json"))
        if action in ("complete", "fail"):
            return httpx.Response(204)
        raise AssertionError(f"the worker called {request.method} {request.url.path}")

    def _grant(self) -> ClaimGrant:
        agent = AgentSpec(
            name="unit-agent",
            version=1,
            model="scripted",
            system_prompt="Be brief.",
            tools=["notes.*"],
            budget=self.budget,
            params=ModelParams(),
        )
        return ClaimGrant(
            run_id=self.run_id,
            project="default",
            epoch=1,
            lease_token=self.lease_token,
            lease_expires_at=_soon(),
            agent=agent,
            input=self.prompt,
            steps=[],
            spent=Spent(usage=Usage(), elapsed_seconds=0.0),
            started_at=datetime.now(UTC),
        )

    def _ack(self, body: dict[str, Any]) -> StepAck:
        step = Usage.model_validate(body.get("usage") or {})
        self.usage = Usage(
            prompt_tokens=self.usage.prompt_tokens + step.prompt_tokens,
            completion_tokens=self.usage.completion_tokens + step.completion_tokens,
            total_tokens=self.usage.total_tokens + step.total_tokens,
        )
        return StepAck(
            seq=body["seq"],
            status=StepStatus(body["status"]),
            replayed=False,
            lease_expires_at=None if body.get("final_output") else _soon(),
            spent=Spent(usage=self.usage, elapsed_seconds=0.1),
        )

    def _verdict(self, body: dict[str, Any]) -> ToolVerdict:
        verdict = self.verdicts.get(body["tool"], "execute")
        effect = {"execute": Effect.ALLOW, "denied": Effect.DENY, "parked": Effect.REQUIRE_APPROVAL}
        explanation = f"{body['tool']} is {verdict} by rule unit"
        return ToolVerdict(
            verdict=verdict,
            seq=body["seq"],
            decision=PolicyDecision(
                effect=effect[verdict], rule="unit", policy_version=1, explanation=explanation
            ),
        )

    def actions(self) -> list[str]:
        return [action for action, _ in self.sent]

    def bodies(self, action: str) -> list[dict[str, Any]]:
        return [body for sent, body in self.sent if sent == action]


def _soon() -> datetime:
    return datetime.now(UTC) + timedelta(seconds=60)


def _prompt(what: str) -> str:
    return f"{what} {uuid.uuid4().hex[:8]}"


def _call(call_id: str, name: str, **arguments: Any) -> dict[str, Any]:
    return {
        "id": call_id,
        "type": "function",
        "function": {"name": name, "arguments": json.dumps(arguments)},
    }


@pytest.fixture(scope="module")
def notes_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("notes") / "notes.txt"


@pytest.fixture(scope="module")
async def tools(notes_file: Path) -> AsyncIterator[McpRouter]:
    server = StdioServer(
        command=sys.executable,
        args=["-m", "testbed.mcp_servers.notes_server"],
        env={"NOTES_FILE": str(notes_file)},
        cwd=REPO,
    )
    router = McpRouter({"notes": server})
    await router.start()

    async def names() -> set[str]:
        return {spec.name for spec in router.catalogue()}

    await eventually(names, lambda found: "notes.add" in found)
    yield router
    await router.aclose()


@pytest.fixture
async def model(models_file: Path) -> AsyncIterator[LLM]:
    llm = LLM(ModelCatalog.load(models_file), 10.0, QUICK)
    yield llm
    await llm.aclose()


@dataclass
class Worker:
    model: LLM
    tools: McpRouter
    heartbeat_seconds: float = 60.0

    async def run(self, gateway: FakeGateway) -> None:
        """Claim the run and work on it as the consumer does: in a task of its own."""
        client = GatewayClient(
            "http://gateway.test", "worker-key", transport=httpx.MockTransport(gateway.handle)
        )
        loop = AgentLoop(client, self.model, self.tools, self.heartbeat_seconds, tool_backoff=QUICK)
        try:
            grant = await client.claim(gateway.run_id, "unit-worker")
            async with asyncio.timeout(10):
                await asyncio.create_task(loop.execute(grant))
        finally:
            await client.aclose()


@pytest.fixture
def worker(model: LLM, tools: McpRouter) -> Worker:
    return Worker(model, tools)


def _notes(notes_file: Path) -> str:
    return notes_file.read_text() if notes_file.exists() else ""


async def test_a_one_step_answer_completes_the_run_with_its_only_step(
    worker: Worker, llm: ScriptedLLM
) -> None:
    prompt = _prompt("one step")
    llm.script(prompt, Reply(content="the answer", prompt_tokens=7, completion_tokens=3))
    gateway = FakeGateway(prompt)
    await worker.run(gateway)
    assert gateway.actions() == ["claim", "steps"]
    (step,) = gateway.bodies("steps")
    assert (step["seq"], step["kind"], step["status"]) == (1, "llm_call", "completed")
    assert step["final_output"] == "the answer"
    assert step["usage"]["total_tokens"] == 10
    assert step["input"]["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": prompt},
    ]


async def test_a_tool_call_is_made_and_its_result_given_to_the_model(
    worker: Worker, llm: ScriptedLLM
) -> None:
    prompt = _prompt("tool then answer")
    llm.script(
        prompt, Reply(tool_calls=[_call("c1", "notes__add", a=2, b=3)]), Reply(content="it is 5")
    )
    gateway = FakeGateway(prompt)
    await worker.run(gateway)
    assert gateway.actions() == ["claim", "steps", "tools/authorize", "steps", "steps"]
    (asked,) = gateway.bodies("tools/authorize")
    assert (asked["seq"], asked["tool"], asked["tool_call_id"]) == (2, "notes.add", "c1")
    assert (asked["arguments"], asked["idempotent"]) == ({"a": 2, "b": 3}, True)
    _, tool_step, final = gateway.bodies("steps")
    assert (tool_step["seq"], tool_step["kind"], tool_step["status"]) == (
        2,
        "tool_call",
        "completed",
    )
    assert tool_step["output"] == "5"
    assert (final["seq"], final["final_output"]) == (3, "it is 5")
    assert final["input"]["messages"][-1] == {"role": "tool", "tool_call_id": "c1", "content": "5"}


async def test_a_denied_call_is_never_made_and_the_model_is_told_why(
    worker: Worker, llm: ScriptedLLM, notes_file: Path
) -> None:
    prompt = _prompt("denied")
    marker = uuid.uuid4().hex
    llm.script(
        prompt,
        Reply(tool_calls=[_call("c1", "notes__write_note", text=marker)]),
        Reply(content="I may not write notes"),
    )
    gateway = FakeGateway(prompt, verdicts={"notes.write_note": "denied"})
    await worker.run(gateway)
    assert gateway.actions() == ["claim", "steps", "tools/authorize", "steps"]
    assert marker not in _notes(notes_file)
    final = gateway.bodies("steps")[-1]
    assert (final["seq"], final["final_output"]) == (3, "I may not write notes")
    assert final["input"]["messages"][-1] == {
        "role": "tool",
        "tool_call_id": "c1",
        "content": "denied by policy: notes.write_note is denied by rule unit",
    }


async def test_a_call_that_needs_approval_parks_the_run_without_making_it(
    worker: Worker, llm: ScriptedLLM, notes_file: Path
) -> None:
    prompt = _prompt("approval")
    marker = uuid.uuid4().hex
    llm.script(
        prompt,
        Reply(tool_calls=[_call("c1", "notes__write_note", text=marker)]),
        Reply(content="never asked"),
    )
    gateway = FakeGateway(prompt, verdicts={"notes.write_note": "parked"})
    await worker.run(gateway)
    assert gateway.actions() == ["claim", "steps", "tools/authorize"]
    assert gateway.bodies("tools/authorize")[0]["idempotent"] is False
    assert marker not in _notes(notes_file)
    assert llm.calls[prompt] == 1


async def test_the_step_budget_ends_the_run_before_the_next_model_call(
    worker: Worker, llm: ScriptedLLM
) -> None:
    prompt = _prompt("step budget")
    llm.script(
        prompt, Reply(tool_calls=[_call("c1", "notes__add", a=1, b=1)]), Reply(content="never")
    )
    gateway = FakeGateway(prompt, budget=Budget(max_steps=2))
    await worker.run(gateway)
    assert gateway.actions() == ["claim", "steps", "tools/authorize", "steps", "fail"]
    (failed,) = gateway.bodies("fail")
    assert failed == {
        "epoch": 1,
        "lease_token": gateway.lease_token,
        "status": "budget_exceeded",
        "error": "step budget exceeded: max_steps is 2",
    }
    assert llm.calls[prompt] == 1


async def test_a_refused_step_report_stops_the_run_at_once(
    worker: Worker, llm: ScriptedLLM, notes_file: Path
) -> None:
    prompt = _prompt("fenced step")
    marker = uuid.uuid4().hex
    llm.script(
        prompt,
        Reply(tool_calls=[_call("c1", "notes__write_note", text=marker)]),
        Reply(content="never asked"),
    )
    gateway = FakeGateway(prompt, refuse={"steps"})
    await worker.run(gateway)
    assert gateway.actions() == ["claim", "steps"]
    assert marker not in _notes(notes_file)
    assert llm.calls[prompt] == 1


async def test_a_refused_heartbeat_cuts_a_model_call_short(
    model: LLM, tools: McpRouter, llm: ScriptedLLM
) -> None:
    prompt = _prompt("fenced heartbeat")
    llm.script(prompt, Reply(content="too late", delay_seconds=3.0))
    gateway = FakeGateway(prompt, refuse={"heartbeat"})
    started = time.monotonic()
    await Worker(model, tools, heartbeat_seconds=0.05).run(gateway)
    assert time.monotonic() - started < 1.5
    assert gateway.actions() == ["claim", "heartbeat"]
