"""What a run costs in callbacks, through a real worker and gateway: a one-step run makes
two (the claim, and the step that carries the answer and completes the run), a model
call's budget is checked by the worker itself, and a final step whose answer was lost is
sent again harmlessly."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from services.contract.jobs import StreamNames
from services.contract.model_catalog import ModelCatalog
from services.contract.worker_api import CatalogueReport
from services.devstack.demo_llm import Reply
from services.gateway.settings import GatewaySettings
from services.worker.agent_loop import AgentLoop
from services.worker.consumer import Consumer
from services.worker.gateway_client import GatewayClient
from services.worker.llm import LLM
from services.worker.mcp_config import StdioServer
from services.worker.mcp_router import McpRouter
from services.worker.retry import Backoff
from testbed.waiting import eventually
from tests.support.gateway_server import serve_gateway
from tests.support.scripted_llm import ScriptedLLM

TERMINAL = {"completed", "failed", "cancelled", "budget_exceeded"}
QUICK = Backoff(3, 0.01, 0.05)


@dataclass
class Recorder(httpx.AsyncBaseTransport):
    """The worker's transport: notes every callback; can lose the answer to one."""

    inner: httpx.AsyncBaseTransport = field(default_factory=httpx.AsyncHTTPTransport)
    sent: list[str] = field(default_factory=list)
    lose_final_answer: bool = False

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.sent.append(request.url.path)
        response = await self.inner.handle_async_request(request)
        if self.lose_final_answer and json.loads(request.content or b"{}").get("final_output"):
            self.lose_final_answer = False
            await response.aread()
            await response.aclose()
            raise httpx.ReadError("connection lost before the answer arrived")
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()

    def callbacks(self, run_id: str) -> list[str]:
        """The actions called back for the run, in order (`claim`, `steps`, …)."""
        prefix = f"/v1/worker/runs/{run_id}/"
        return [path.removeprefix(prefix) for path in self.sent if path.startswith(prefix)]


@dataclass
class Stack:
    api: httpx.AsyncClient
    llm: ScriptedLLM
    recorder: Recorder
    redis: Redis
    streams: StreamNames

    async def start(self, prompt: str, **agent_fields: Any) -> str:
        name = f"agent-{uuid.uuid4().hex[:8]}"
        body = {"name": name, "model": "scripted", **agent_fields}
        response = await self.api.post("/v1/agents", json=body)
        assert response.status_code == 201, response.text
        response = await self.api.post("/v1/runs", json={"agent": name, "input": prompt})
        assert response.status_code == 202, response.text
        return str(response.json()["id"])

    async def finished(self, run_id: str) -> dict[str, Any]:
        async def get() -> dict[str, Any]:
            run: dict[str, Any] = (await self.api.get(f"/v1/runs/{run_id}")).json()
            return run

        return await eventually(get, lambda r: r["status"] in TERMINAL, within=20)

    async def steps(self, run_id: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = (await self.api.get(f"/v1/runs/{run_id}/steps")).json()[
            "items"
        ]
        return items

    async def unacknowledged(self) -> int:
        """Jobs the worker has not acknowledged: it acknowledges a run's job once done."""
        pending = await self.redis.xpending(self.streams.runs, self.streams.group)
        return int(pending["pending"])

    async def sent_to(self, prompt: str) -> list[dict[str, Any]]:
        """The bodies the model was sent for the conversation started by `prompt`."""
        return [b for b in self.llm.bodies if prompt in (m.get("content") for m in b["messages"])]

    async def audit(self, run_id: str) -> list[str]:
        """The run's audit actions, oldest first."""
        response = await self.api.get(f"/v1/audit?limit=500&target=run:{run_id}")
        return [event["action"] for event in reversed(response.json()["items"])]


@contextlib.asynccontextmanager
async def _worker(
    settings: GatewaySettings,
    url: str,
    redis: Redis,
    worker_key: str,
    models_file: Path,
    recorder: Recorder,
    tools: McpRouter,
) -> AsyncIterator[None]:
    gateway = GatewayClient(url, worker_key, transport=recorder)
    # As the worker process does before it reads a job: the gateway authorises only the
    # tools the lease holder listed.
    await gateway.report_tools(
        CatalogueReport(worker_id="callbacks-worker", tools=tools.catalogue())
    )
    llm = LLM(ModelCatalog.load(models_file), 10.0, QUICK)
    consumer = Consumer(
        redis,
        StreamNames(settings.stream_prefix),
        gateway,
        AgentLoop(
            gateway,
            llm,
            tools,
            heartbeat_seconds=60.0,  # no heartbeat among the callbacks counted
            tool_backoff=QUICK,
        ),
        worker_id="callbacks-worker",
        max_in_flight=8,
        read_block_ms=50,
    )
    stop = asyncio.Event()
    task = asyncio.create_task(consumer.run(stop))
    try:
        yield
    finally:
        stop.set()
        await task
        await consumer.drain(0)
        await gateway.aclose()
        await llm.aclose()


@pytest.fixture
async def tools(tmp_path: Path) -> AsyncIterator[McpRouter]:
    router = McpRouter(
        {
            "notes": StdioServer(
                command=sys.executable,
                args=["-m", "testbed.mcp_servers.notes_server"],
                env={"NOTES_FILE": str(tmp_path / "notes.txt")},
            )
        }
    )
    await router.start()
    await eventually(lambda: _names(router), lambda names: "notes.add" in names, within=30)
    try:
        yield router
    finally:
        await router.aclose()


async def _names(router: McpRouter) -> set[str]:
    return {spec.name for spec in router.catalogue()}


@pytest.fixture
async def stack(
    settings: GatewaySettings,
    redis: Redis,
    llm: ScriptedLLM,
    admin_key: str,
    worker_key: str,
    models_file: Path,
    tools: McpRouter,
) -> AsyncIterator[Stack]:
    recorder = Recorder()
    async with (
        serve_gateway(settings) as served,
        httpx.AsyncClient(
            base_url=served.url, headers={"Authorization": f"Bearer {admin_key}"}, timeout=10
        ) as api,
        _worker(settings, served.url, redis, worker_key, models_file, recorder, tools),
    ):
        yield Stack(api, llm, recorder, redis, StreamNames(settings.stream_prefix))


def _call(call_id: str, name: str, **arguments: Any) -> dict[str, Any]:
    return {
        "id": call_id,
        "type": "function",
        "function": {"name": name, "arguments": json.dumps(arguments)},
    }


async def test_a_one_step_run_makes_two_callbacks_and_completes(stack: Stack) -> None:
    prompt = f"two callbacks {uuid.uuid4().hex[:8]}"
    stack.llm.script(prompt, Reply(content="the answer", prompt_tokens=7, completion_tokens=3))
    run = await stack.finished(await stack.start(prompt))
    assert (run["status"], run["output"], run["error"]) == ("completed", "the answer", None)
    assert run["finished_at"] is not None
    assert run["usage"]["total_tokens"] == 10
    assert stack.recorder.callbacks(run["id"]) == ["claim", "steps"]
    (step,) = await stack.steps(run["id"])
    assert (step["seq"], step["status"]) == (1, "completed")
    actions = await stack.audit(run["id"])
    assert actions[-3:] == ["run.claimed", "step.recorded", "run.completed"]


async def test_a_three_step_run_with_two_tool_calls_makes_eight_callbacks(stack: Stack) -> None:
    response = await stack.api.put(
        "/v1/policies", json={"rules": [{"id": "add", "tool": "notes.add", "effect": "allow"}]}
    )
    assert response.status_code == 200, response.text
    prompt = f"tools {uuid.uuid4().hex[:8]}"
    stack.llm.script(
        prompt,
        Reply(tool_calls=[_call("c1", "notes__add", a=1, b=2)]),
        Reply(tool_calls=[_call("c2", "notes__add", a=3, b=4)]),
        Reply(content="3 and 7"),
    )
    run = await stack.finished(await stack.start(prompt, tools=["notes.add"]))
    assert (run["status"], run["output"]) == ("completed", "3 and 7")
    steps = await stack.steps(run["id"])
    assert [(s["kind"], s["status"]) for s in steps] == [
        ("llm_call", "completed"),
        ("tool_call", "completed"),
    ] * 2 + [("llm_call", "completed")]
    assert [s["output"] for s in steps if s["kind"] == "tool_call"] == ["3", "7"]
    tool_call = ["tools/authorize", "steps"]
    assert stack.recorder.callbacks(run["id"]) == [
        "claim",
        "steps",
        *tool_call,
        "steps",
        *tool_call,
        "steps",
    ]


async def test_a_final_step_whose_answer_was_lost_is_sent_again_harmlessly(
    stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    prompt = f"lost answer {uuid.uuid4().hex[:8]}"
    stack.llm.script(prompt, Reply(content="said once"))
    stack.recorder.lose_final_answer = True
    with caplog.at_level(logging.INFO, logger="services.worker"):
        run = await stack.finished(await stack.start(prompt))
        await eventually(stack.unacknowledged, lambda pending: pending == 0)
    assert (run["status"], run["output"]) == ("completed", "said once")
    assert stack.recorder.callbacks(run["id"]) == ["claim", "steps", "steps"]
    assert stack.recorder.lose_final_answer is False
    assert len(await stack.steps(run["id"])) == 1
    assert stack.llm.calls[prompt] == 1
    assert (await stack.audit(run["id"])).count("run.completed") == 1
    messages = [record.getMessage() for record in caplog.records]
    assert not [m for m in messages if "dropped" in m or "abandoned" in m or "crashed" in m]


# The budget, checked by the worker before each model call


async def test_a_cost_budget_on_an_unpriced_model_ends_the_run_before_any_call(
    stack: Stack,
) -> None:
    prompt = f"unpriced {uuid.uuid4().hex[:8]}"
    agent_fields = {"model": "unpriced", "budget": {"max_cost_usd": 1.0}}
    run = await stack.finished(await stack.start(prompt, **agent_fields))
    assert run["status"] == "budget_exceeded"
    assert run["error"] == (
        "cost budget cannot be enforced: max_cost_usd is 1.0 but this model's price is unknown"
    )
    assert await stack.sent_to(prompt) == []
    assert await stack.steps(run["id"]) == []
    assert stack.recorder.callbacks(run["id"]) == ["claim", "fail"]
    assert (await stack.audit(run["id"]))[-1] == "run.budget_exceeded"


async def test_a_prompt_larger_than_the_token_budget_is_never_sent(stack: Stack) -> None:
    prompt = f"far too long for the budget {uuid.uuid4().hex[:8]} " + "word " * 50
    run = await stack.finished(await stack.start(prompt, budget={"max_tokens": 20}))
    assert run["status"] == "budget_exceeded"
    assert run["error"].startswith("token budget exceeded: max_tokens is 20")
    assert await stack.sent_to(prompt) == []


async def test_the_step_budget_stops_the_next_model_call(stack: Stack) -> None:
    prompt = f"step budget {uuid.uuid4().hex[:8]}"
    stack.llm.script(
        prompt, Reply(tool_calls=[_call("c1", "nowhere__nothing")]), Reply(content="never")
    )
    run = await stack.finished(await stack.start(prompt, budget={"max_steps": 2}))
    assert run["status"] == "budget_exceeded"
    assert run["error"] == "step budget exceeded: max_steps is 2"
    assert stack.llm.calls[prompt] == 1
    assert [(s["kind"], s["status"]) for s in await stack.steps(run["id"])] == [
        ("llm_call", "completed"),
        ("tool_call", "denied"),
    ]


async def test_the_token_budget_left_after_a_step_caps_the_next_call(stack: Stack) -> None:
    prompt = f"capped {uuid.uuid4().hex[:8]}"
    stack.llm.script(
        prompt,
        Reply(tool_calls=[_call("c1", "nowhere__nothing")], prompt_tokens=50, completion_tokens=50),
        Reply(content="short", prompt_tokens=60, completion_tokens=5),
    )
    run = await stack.finished(await stack.start(prompt, budget={"max_tokens": 400}))
    assert run["status"] == "completed"
    first, second = await stack.sent_to(prompt)
    # 400 less the prompt's estimate; then less the 100 spent, as the step's ack said,
    # and the estimate of a longer prompt.
    assert 300 < first["max_tokens"] < 400
    assert second["max_tokens"] <= first["max_tokens"] - 100


async def test_a_run_offered_fewer_tools_than_its_agent_names_says_so_in_a_note(
    stack: Stack,
) -> None:
    """Tools used to vanish silently: a run whose tools were missing completed with
    nothing on its record saying it went without them. The note costs no step."""
    prompt = f"missing tools {uuid.uuid4().hex[:8]}"
    stack.llm.script(prompt, Reply(content="did without"))
    run = await stack.finished(
        await stack.start(
            prompt, tools=["notes.add", "notes.nope", "ghost.*"], budget={"max_steps": 1}
        )
    )
    assert (run["status"], run["output"]) == ("completed", "did without")
    note, answer = await stack.steps(run["id"])
    assert (note["seq"], note["kind"], note["status"]) == (1, "note", "completed")
    assert note["output"] == {
        "tools_missing": [
            {"pattern": "notes.nope", "reason": "no_such_tool"},
            {"pattern": "ghost.*", "reason": "not_on_this_worker"},
        ]
    }
    assert (answer["seq"], answer["kind"]) == (2, "llm_call")
    offered = (await stack.sent_to(prompt))[0]["tools"]
    assert [tool["function"]["name"] for tool in offered] == ["notes__add"]
