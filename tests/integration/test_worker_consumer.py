"""A worker's consumer against a real gateway, Redis and LiteLLM: transient model failures
retried within the budget, jobs that cannot be run set aside in the dead-letter stream,
and a stopping worker handing its runs back."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from services.contract.jobs import DeadLetter, JobMessage, JobReason, StreamNames
from services.contract.model_catalog import ModelCatalog
from services.devstack.demo_llm import Reply
from services.devstack.embedded import free_port
from services.gateway.settings import GatewaySettings
from services.worker.agent_loop import AgentLoop
from services.worker.consumer import Consumer
from services.worker.gateway_client import GatewayClient
from services.worker.llm import LLM
from services.worker.mcp_router import McpRouter
from services.worker.retry import Backoff
from testbed.streams import append, entries
from testbed.waiting import eventually
from tests.support.fault_proxy import FaultProxy
from tests.support.gateway_server import serve_gateway
from tests.support.scripted_llm import ScriptedLLM

TERMINAL = {"completed", "failed", "cancelled", "budget_exceeded"}
QUICK = Backoff(3, 0.01, 0.05)


@dataclass
class Stack:
    url: str
    api: httpx.AsyncClient
    redis: Redis
    streams: StreamNames
    llm: ScriptedLLM
    worker_key: str
    models_file: Path

    async def agent(self, **fields: Any) -> str:
        name = f"agent-{uuid.uuid4().hex[:8]}"
        body = {"name": name, "model": "scripted", **fields}
        response = await self.api.post("/v1/agents", json=body)
        assert response.status_code == 201, response.text
        return name

    async def start(self, prompt: str, **agent_fields: Any) -> str:
        agent = await self.agent(**agent_fields)
        response = await self.api.post("/v1/runs", json={"agent": agent, "input": prompt})
        assert response.status_code == 202, response.text
        return str(response.json()["id"])

    async def get(self, run_id: str) -> dict[str, Any]:
        run: dict[str, Any] = (await self.api.get(f"/v1/runs/{run_id}")).json()
        return run

    async def finished(self, run_id: str, within: float = 20) -> dict[str, Any]:
        return await eventually(
            lambda: self.get(run_id), lambda r: r["status"] in TERMINAL, within=within
        )

    async def steps(self, run_id: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = (await self.api.get(f"/v1/runs/{run_id}/steps")).json()[
            "items"
        ]
        return items

    async def job_of(self, run_id: str) -> bytes:
        """The id of the stream entry the gateway published for the run."""

        async def published() -> list[bytes]:
            found = await entries(self.redis, self.streams.runs)
            return [i for i, fields in found if fields.get(b"run_id") == run_id.encode()]

        return (await eventually(published, lambda ids: len(ids) == 1))[0]

    async def pending(self) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = await self.redis.xpending_range(
            self.streams.runs, self.streams.group, min="-", max="+", count=100
        )
        return found

    async def undelivered(self) -> int:
        """Entries of the runs stream no consumer of the group has read yet."""
        groups = await self.redis.xinfo_groups(self.streams.runs)
        return int(next(g["lag"] for g in groups if g["name"] == self.streams.group.encode()))

    async def dead_letters(self) -> list[DeadLetter]:
        found = await entries(self.redis, self.streams.dead_letter)
        return [DeadLetter.from_fields(fields) for _id, fields in found]

    async def llm_calls(self, prompt: str) -> int:
        return self.llm.calls[prompt]

    async def ensure_group(self) -> None:
        with contextlib.suppress(ResponseError):  # BUSYGROUP: it exists
            await self.redis.xgroup_create(
                self.streams.runs, self.streams.group, id="0", mkstream=True
            )


@pytest.fixture
def lease_seconds() -> float:
    """The gateway's lease; a test parametrizes it to see leases run out."""
    return 30.0


@pytest.fixture
async def stack(
    settings: GatewaySettings,
    lease_seconds: float,
    redis: Redis,
    llm: ScriptedLLM,
    admin_key: str,
    worker_key: str,
    models_file: Path,
) -> AsyncIterator[Stack]:
    async with (
        serve_gateway(settings.model_copy(update={"lease_seconds": lease_seconds})) as served,
        httpx.AsyncClient(
            base_url=served.url, headers={"Authorization": f"Bearer {admin_key}"}, timeout=10
        ) as api,
    ):
        yield Stack(served.url, api, redis, settings.streams, llm, worker_key, models_file)


@dataclass
class Worker:
    consumer: Consumer
    stop: asyncio.Event
    task: asyncio.Task[None]

    async def in_flight(self) -> int:
        return self.consumer.in_flight

    async def shut_down(self, drain_seconds: float) -> float:
        """SIGTERM, as the worker process handles it; how long the shutdown took."""
        started = time.monotonic()
        self.stop.set()
        await self.task
        await self.consumer.drain(drain_seconds)
        return time.monotonic() - started


@contextlib.asynccontextmanager
async def worker(
    stack: Stack,
    name: str = "worker-1",
    *,
    gateway_url: str | None = None,
    llm_backoff: Backoff = QUICK,
    read_block_ms: int = 50,
    reclaim_idle_seconds: float = 60.0,
    max_deliveries: int = 5,
    ride_through_seconds: float = 15.0,
    max_in_flight: int = 8,
) -> AsyncIterator[Worker]:
    gateway = GatewayClient(
        gateway_url or stack.url, stack.worker_key, ride_through_seconds=ride_through_seconds
    )
    llm = LLM(ModelCatalog.load(stack.models_file), 10.0, llm_backoff)
    consumer = Consumer(
        stack.redis,
        stack.streams,
        gateway,
        AgentLoop(
            gateway,
            llm,
            McpRouter({}),
            heartbeat_seconds=1.0,
            tool_backoff=QUICK,
        ),
        worker_id=name,
        max_in_flight=max_in_flight,
        read_block_ms=read_block_ms,
        reclaim_idle_seconds=reclaim_idle_seconds,
        max_deliveries=max_deliveries,
    )
    stop = asyncio.Event()
    running = Worker(consumer, stop, asyncio.create_task(consumer.run(stop)))
    try:
        yield running
    finally:
        if not running.task.done():
            await running.shut_down(0)
        await gateway.aclose()
        await llm.aclose()


def retries(kind: str) -> float:
    return REGISTRY.get_sample_value("ferrumdeck_worker_retries_total", {"kind": kind}) or 0.0


def claims(outcome: str) -> float:
    sample = REGISTRY.get_sample_value("ferrumdeck_worker_claims_total", {"outcome": outcome})
    return sample or 0.0


def dead_lettered(reason: str) -> float:
    sample = REGISTRY.get_sample_value("ferrumdeck_worker_dead_letters_total", {"reason": reason})
    return sample or 0.0


def seconds_between(run: dict[str, Any]) -> float:
    started = datetime.fromisoformat(run["started_at"])
    return (datetime.fromisoformat(run["finished_at"]) - started).total_seconds()


# Transient and permanent model failures


async def test_a_model_that_answers_503_twice_then_succeeds_completes_the_run(
    stack: Stack,
) -> None:
    prompt = f"flaky {uuid.uuid4().hex[:8]}"
    overloaded = Reply(content="overloaded, try again", error_status=503)
    stack.llm.hiccups(prompt, overloaded, overloaded)
    stack.llm.script(prompt, Reply(content="made it"))
    before = retries("llm")
    async with worker(stack):
        run = await stack.finished(await stack.start(prompt))
    assert (run["status"], run["output"]) == ("completed", "made it")
    assert stack.llm.calls[prompt] == 3
    assert [(s["kind"], s["status"]) for s in await stack.steps(run["id"])] == [
        ("llm_call", "completed")
    ]
    assert retries("llm") == before + 2


async def test_a_rate_limited_call_waits_as_long_as_the_provider_asks(stack: Stack) -> None:
    prompt = f"rate limited {uuid.uuid4().hex[:8]}"
    stack.llm.hiccups(prompt, Reply(content="slow down", error_status=429, retry_after="1.5"))
    stack.llm.script(prompt, Reply(content="thanks for waiting"))
    async with worker(stack, llm_backoff=Backoff(3, 0.01, 10.0)):
        run = await stack.finished(await stack.start(prompt))
    assert (run["status"], run["output"]) == ("completed", "thanks for waiting")
    assert stack.llm.calls[prompt] == 2
    assert seconds_between(run) >= 1.5  # the backoff alone would have waited 10 ms at most


@pytest.mark.parametrize(
    ("status", "message"), [(400, "unknown parameter 'tempreature'"), (401, "bad api key")]
)
async def test_a_permanent_error_fails_the_run_at_once_with_the_providers_message(
    stack: Stack, status: int, message: str
) -> None:
    prompt = f"broken {status} {uuid.uuid4().hex[:8]}"
    stack.llm.script(prompt, Reply(content=message, error_status=status))
    before = retries("llm")
    async with worker(stack, llm_backoff=Backoff(3, 5.0, 10.0)):
        run = await stack.finished(await stack.start(prompt))
    assert run["status"] == "failed"
    assert message in run["error"]
    assert stack.llm.calls[prompt] == 1
    assert seconds_between(run) < 2
    assert retries("llm") == before
    (step,) = await stack.steps(run["id"])
    assert step["status"] == "failed"
    assert message in step["error"]


async def test_a_model_that_keeps_failing_fails_the_run_with_its_last_error(
    stack: Stack,
) -> None:
    prompt = f"down {uuid.uuid4().hex[:8]}"
    stack.llm.script(prompt, Reply(content="bad gateway upstream", error_status=502))
    async with worker(stack, llm_backoff=Backoff(2, 0.01, 0.05)):
        run = await stack.finished(await stack.start(prompt))
    assert run["status"] == "failed"
    assert "bad gateway upstream" in run["error"]
    assert "after 3 attempts" in run["error"]
    assert stack.llm.calls[prompt] == 3


async def test_retries_never_wait_past_the_runs_time_budget(stack: Stack) -> None:
    prompt = f"out of time {uuid.uuid4().hex[:8]}"
    stack.llm.script(prompt, Reply(content="still overloaded", error_status=503))
    # Every wait would be 5 s; the run has 3 s in all.
    async with worker(stack, llm_backoff=Backoff(3, 5.0, 10.0, jitter=lambda: 1.0)):
        run = await stack.finished(await stack.start(prompt, budget={"max_seconds": 3}))
    assert run["status"] == "failed"
    assert "still overloaded" in run["error"]
    assert stack.llm.calls[prompt] == 1
    assert seconds_between(run) < 3


# The dead-letter stream


async def over_deliver(stack: Stack, entry_id: bytes, times: int) -> None:
    """Make the entry look taken by a worker that died `times` times while running it."""
    await stack.ensure_group()
    await stack.redis.xreadgroup(stack.streams.group, "ghost", {stack.streams.runs: ">"})
    await stack.redis.xclaim(
        stack.streams.runs, stack.streams.group, "ghost", 0, [entry_id], retrycount=times
    )


@pytest.mark.parametrize(
    ("fields", "raw", "why"),
    [
        (
            {"run_id": "not-a-uuid", "reason": "created"},
            {"run_id": "not-a-uuid", "reason": "created"},
            "malformed job: run_id: Input should be a valid UUID",
        ),
        ({"run_id": b"\xff"}, {"run_id": "\\xff"}, "malformed job: 'utf-8' codec can't decode"),
    ],
)
async def test_a_malformed_entry_lands_in_the_dead_letters_with_its_fields(
    stack: Stack, fields: dict[str, Any], raw: dict[str, str], why: str
) -> None:
    await stack.ensure_group()
    entry_id = await append(stack.redis, stack.streams.runs, fields)
    before = dead_lettered("malformed")
    async with worker(stack):
        (letter,) = await eventually(stack.dead_letters, lambda found: len(found) == 1)
    assert letter.run_id is None
    assert letter.source_id == entry_id.decode()
    assert (letter.worker_id, letter.deliveries) == ("worker-1", 1)
    assert letter.reason.startswith(why)
    assert json.loads(letter.fields) == raw
    assert await stack.pending() == []
    assert dead_lettered("malformed") == before + 1


async def test_an_over_delivered_job_fails_its_run_and_lands_in_the_dead_letters(
    stack: Stack,
) -> None:
    prompt = f"poison {uuid.uuid4().hex[:8]}"
    run_id = await stack.start(prompt)
    entry_id = await stack.job_of(run_id)
    await over_deliver(stack, entry_id, 5)
    before = dead_lettered("max_deliveries")
    async with worker(stack, reclaim_idle_seconds=0.2, max_deliveries=5):
        run = await stack.finished(run_id)
        (letter,) = await eventually(stack.dead_letters, lambda found: len(found) == 1)
    assert run["status"] == "failed"
    assert "delivered 6 times" in run["error"]
    assert run["dead_lettered_at"] is not None
    assert letter.run_id == uuid.UUID(run_id)
    assert (letter.deliveries, letter.source_id) == (6, entry_id.decode())
    assert "max_deliveries is 5" in letter.reason
    assert JobMessage.model_validate(json.loads(letter.fields)).run_id == uuid.UUID(run_id)
    assert await stack.pending() == []
    assert stack.llm.calls[prompt] == 0
    assert dead_lettered("max_deliveries") == before + 1


async def test_an_entry_delivered_max_deliveries_times_still_runs(stack: Stack) -> None:
    prompt = f"persistent {uuid.uuid4().hex[:8]}"
    run_id = await stack.start(prompt)
    await over_deliver(stack, await stack.job_of(run_id), 4)  # the reclaim makes it 5
    async with worker(stack, reclaim_idle_seconds=0.2, max_deliveries=5):
        run = await stack.finished(run_id)
    assert (run["status"], run["error"]) == ("completed", None)
    assert await stack.dead_letters() == []


async def test_an_over_delivered_duplicate_of_a_leased_run_is_only_acknowledged(
    stack: Stack,
) -> None:
    run_id = await stack.start(f"busy {uuid.uuid4().hex[:8]}")
    entry_id = await stack.job_of(run_id)
    claimed = await stack.api.post(
        f"/v1/worker/runs/{run_id}/claim",
        json={"worker_id": "someone-else"},
        headers={"Authorization": f"Bearer {stack.worker_key}"},
    )
    assert claimed.status_code == 200
    await over_deliver(stack, entry_id, 9)
    async with worker(stack, reclaim_idle_seconds=0.2):
        await eventually(stack.pending, lambda found: found == [])
    assert await stack.dead_letters() == []
    assert (await stack.get(run_id))["status"] == "running"


async def test_an_over_delivered_job_of_a_finished_run_is_only_acknowledged(
    stack: Stack,
) -> None:
    run_id = await stack.start(f"gone {uuid.uuid4().hex[:8]}")
    entry_id = await stack.job_of(run_id)
    assert (await stack.api.post(f"/v1/runs/{run_id}/cancel")).status_code == 200
    await over_deliver(stack, entry_id, 9)
    async with worker(stack, reclaim_idle_seconds=0.2):
        await eventually(stack.pending, lambda found: found == [])
    assert await stack.dead_letters() == []
    run = await stack.get(run_id)
    assert (run["status"], run["dead_lettered_at"]) == ("cancelled", None)


async def test_an_over_delivered_job_of_an_unknown_run_lands_in_the_dead_letters(
    stack: Stack,
) -> None:
    await stack.ensure_group()
    stray = uuid.uuid4()
    entry_id = await append(
        stack.redis,
        stack.streams.runs,
        JobMessage(run_id=stray, reason=JobReason.CREATED).to_fields(),
    )
    await over_deliver(stack, entry_id, 9)
    async with worker(stack, reclaim_idle_seconds=0.2):
        (letter,) = await eventually(stack.dead_letters, lambda found: len(found) == 1)
    assert (letter.run_id, letter.deliveries) == (stray, 10)
    assert "no such run" in letter.reason
    assert await stack.pending() == []


async def test_an_over_delivered_job_stays_pending_while_the_gateway_is_away(
    stack: Stack,
) -> None:
    run_id = await stack.start(f"patient {uuid.uuid4().hex[:8]}")
    entry_id = await stack.job_of(run_id)
    await over_deliver(stack, entry_id, 9)
    nowhere = f"http://127.0.0.1:{free_port()}"
    async with worker(
        stack, gateway_url=nowhere, reclaim_idle_seconds=0.2, ride_through_seconds=0.1
    ):
        # Taken again and again (each reclaim counts), never acknowledged nor set aside.
        await eventually(
            stack.pending,
            lambda found: bool(found) and found[0]["times_delivered"] >= 12,
            within=10,
        )
    assert [p["message_id"] for p in await stack.pending()] == [entry_id]
    assert await stack.dead_letters() == []
    assert (await stack.get(run_id))["status"] == "queued"

    async with worker(stack, "worker-2", reclaim_idle_seconds=0.2):
        (letter,) = await eventually(stack.dead_letters, lambda found: len(found) == 1)
    assert letter.run_id == uuid.UUID(run_id)
    assert (await stack.get(run_id))["status"] == "failed"


async def test_a_long_run_keeps_its_job_from_being_reclaimed_by_another_worker(
    stack: Stack,
) -> None:
    prompt = f"long {uuid.uuid4().hex[:8]}"
    stack.llm.script(prompt, Reply(content="took a while", delay_seconds=3.0))
    refused = claims("refused")
    async with worker(stack, "busy", reclaim_idle_seconds=1.0):
        run_id = await stack.start(prompt)
        await eventually(lambda: stack.llm_calls(prompt), lambda n: n == 1)
        async with worker(stack, "idle", reclaim_idle_seconds=1.0):
            run = await stack.finished(run_id)
    assert run["status"] == "completed"
    # Three times longer than the reclaim idle time, yet "idle" never took the job.
    assert claims("refused") == refused
    audit = (await stack.api.get("/v1/audit", params={"target": f"run:{run_id}"})).json()
    claimers = [e["actor"] for e in audit["items"] if e["action"] == "run.claimed"]
    assert [actor.split(" (")[0] for actor in claimers] == ["busy"]


# The gateway going away


async def test_a_worker_whose_claims_wait_leaves_the_rest_of_the_stream_to_others(
    stack: Stack,
) -> None:
    """A job read but not yet claimed has left the relay's fair turns: a worker that read on
    while its claims waited piled one project's flood up in itself, ahead of another
    project's run still in the stream (issue 16). Here its claims cannot get through, and
    with room for 64 runs it takes only a few jobs; another worker runs the rest."""
    await stack.ensure_group()
    for _ in range(30):
        job = JobMessage(run_id=uuid.uuid4(), reason=JobReason.CREATED, project="flood")
        await append(stack.redis, stack.streams.runs, job.to_fields())
    proxy = FaultProxy("127.0.0.1", int(stack.url.rsplit(":", 1)[1]))
    await proxy.start()
    await proxy.cut()
    try:
        async with worker(
            stack, "stuck", gateway_url=f"http://127.0.0.1:{proxy.port}", max_in_flight=64
        ) as stuck:
            await eventually(stuck.in_flight, lambda n: n > 0)
            async with worker(stack, "free", max_in_flight=64):
                # The free worker's claims are refused (no such runs) and acknowledged.
                await eventually(stack.undelivered, lambda n: n == 0)
                await eventually(
                    stack.pending, lambda found: all(p["consumer"] == b"stuck" for p in found)
                )
            held = await stack.pending()
            assert 0 < len(held) <= 8, f"the stuck worker read {len(held)} of 30 jobs"
            assert await stuck.in_flight() == len(held)
    finally:
        await proxy.aclose()


@pytest.mark.parametrize("lease_seconds", [2.0])
async def test_a_run_cut_off_from_the_gateway_is_reclaimed_once_its_lease_ran_out(
    stack: Stack,
) -> None:
    prompt = f"cut off {uuid.uuid4().hex[:8]}"
    stack.llm.hiccups(prompt, Reply(content="never recorded", delay_seconds=1.5))
    stack.llm.script(prompt, Reply(content="finished elsewhere"))
    proxy = FaultProxy("127.0.0.1", int(stack.url.rsplit(":", 1)[1]))
    await proxy.start()
    try:
        async with worker(
            stack,
            "cut-off",
            gateway_url=f"http://127.0.0.1:{proxy.port}",
            ride_through_seconds=1.0,
        ) as lone:
            run_id = await stack.start(prompt)
            entry_id = await stack.job_of(run_id)
            await eventually(lambda: stack.llm_calls(prompt), lambda n: n == 1)
            await proxy.cut()
            # The answer cannot be reported: the run is given up here, its job kept.
            await eventually(lone.in_flight, lambda n: n == 0)
            (pending,) = await stack.pending()
            assert (pending["message_id"], pending["consumer"]) == (entry_id, b"cut-off")
    finally:
        await proxy.aclose()

    # Reclaimed only once idle longer than the lease: before, the claim would be refused.
    async with worker(stack, "survivor", reclaim_idle_seconds=3.0):
        run = await stack.finished(run_id)
    assert (run["status"], run["output"]) == ("completed", "finished elsewhere")
    assert [(s["kind"], s["status"]) for s in await stack.steps(run_id)] == [
        ("llm_call", "completed")
    ]
    assert await stack.pending() == []


async def test_a_gateway_away_for_a_moment_is_ridden_through_without_losing_the_lease(
    stack: Stack,
) -> None:
    prompt = f"blip {uuid.uuid4().hex[:8]}"
    stack.llm.script(prompt, Reply(content="reported after the blip", delay_seconds=1.0))
    proxy = FaultProxy("127.0.0.1", int(stack.url.rsplit(":", 1)[1]))
    await proxy.start()
    ridden = retries("callback")
    try:
        async with worker(stack, "rider", gateway_url=f"http://127.0.0.1:{proxy.port}"):
            run_id = await stack.start(prompt)
            await eventually(lambda: stack.llm_calls(prompt), lambda n: n == 1)
            await proxy.cut()
            await asyncio.sleep(2.0)  # the answer arrives while the gateway is away
            await proxy.restore()
            run = await stack.finished(run_id)
    finally:
        await proxy.aclose()
    assert (run["status"], run["output"]) == ("completed", "reported after the blip")
    assert stack.llm.calls[prompt] == 1
    assert retries("callback") > ridden
    audit = (await stack.api.get("/v1/audit", params={"target": f"run:{run_id}"})).json()
    claims = [e for e in audit["items"] if e["action"] == "run.claimed"]
    assert [c["details"]["epoch"] for c in claims] == [1]


# Stopping


async def test_a_run_still_going_at_the_drain_deadline_is_handed_back_and_continued(
    stack: Stack,
) -> None:
    prompt = f"long thought {uuid.uuid4().hex[:8]}"
    stack.llm.hiccups(prompt, Reply(content="too late", delay_seconds=8))
    stack.llm.script(prompt, Reply(content="continued elsewhere"))
    async with worker(stack, "leaving") as leaving:
        run_id = await stack.start(prompt)
        entry_id = await stack.job_of(run_id)
        await eventually(lambda: stack.llm_calls(prompt), lambda n: n == 1)
        took = await leaving.shut_down(drain_seconds=0.5)
    assert took < 3
    run = await stack.get(run_id)
    assert run["status"] == "queued"  # released, not waiting for its lease to run out
    # The old entry stays pending for reclaim in case the release had not got through.
    (pending,) = await stack.pending()
    assert (pending["message_id"], pending["consumer"]) == (entry_id, b"leaving")

    started = time.monotonic()
    async with worker(stack, "staying"):
        run = await stack.finished(run_id)
    assert time.monotonic() - started < 10  # well before the 30 s lease would have expired
    assert (run["status"], run["output"]) == ("completed", "continued elsewhere")
    assert stack.llm.calls[prompt] == 2


async def test_a_run_that_finishes_within_the_drain_is_not_handed_back(stack: Stack) -> None:
    prompt = f"nearly done {uuid.uuid4().hex[:8]}"
    stack.llm.script(prompt, Reply(content="done in time", delay_seconds=1))
    async with worker(stack) as leaving:
        run_id = await stack.start(prompt)
        await eventually(lambda: stack.llm_calls(prompt), lambda n: n == 1)
        await leaving.shut_down(drain_seconds=10)
    run = await stack.get(run_id)
    assert (run["status"], run["output"]) == ("completed", "done in time")
    assert await stack.pending() == []


async def test_jobs_read_as_the_stop_comes_are_put_back_for_another_worker(
    stack: Stack,
) -> None:
    prompt = f"just missed {uuid.uuid4().hex[:8]}"
    async with worker(stack, "leaving", read_block_ms=5000) as leaving:
        await asyncio.sleep(0.3)  # blocked in its read
        leaving.stop.set()
        run_id = await stack.start(prompt)  # the read returns with this job
        await leaving.task
    assert stack.llm.calls[prompt] == 0
    assert (await stack.get(run_id))["status"] == "queued"
    assert await stack.pending() == []
    found = await entries(stack.redis, stack.streams.runs)
    assert [f[b"run_id"] for _id, f in found] == [run_id.encode(), run_id.encode()]

    async with worker(stack, "staying"):
        run = await stack.finished(run_id)
    assert (run["status"], run["error"]) == ("completed", None)


# The consumer group's listing


async def test_a_waiting_worker_removed_from_the_group_joins_it_again(stack: Stack) -> None:
    """The gateway's sweeper removes consumers idle with nothing pending; a live worker
    that only waits for jobs must not stay unlisted (and not ready) after it."""

    async def consumers() -> set[str]:
        try:
            found = await stack.redis.xinfo_consumers(stack.streams.runs, stack.streams.group)
        except ResponseError:  # the worker has not made the stream and group yet
            return set()
        return {c["name"].decode() for c in found}

    async with worker(stack, "waiting-worker", reclaim_idle_seconds=0.4):
        await eventually(consumers, lambda names: "waiting-worker" in names)
        await stack.redis.xgroup_delconsumer(
            stack.streams.runs, stack.streams.group, "waiting-worker"
        )
        await eventually(consumers, lambda names: "waiting-worker" in names)
