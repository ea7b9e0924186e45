"""Runs completed per second end to end, and what the platform adds to every step.

A run's life costs a fixed set of database transactions and stream operations; whatever
the platform spends beyond them (HTTP callbacks, frameworks, serialisation, LiteLLM,
MCP plumbing) is overhead. This script measures both in one run:

* **FerrumDeck**: a real gateway and 1, then 2, worker processes; the model is
  `bench.llm_server` answering at once (zero latency); `--runs` one-step runs (one model
  call) are started by 16 concurrent clients and timed from the first run's creation to
  the last one's end. Then `--tool-runs` three-step runs: three model calls with two
  MCP tool calls between them (`notes.add` of the test suite's notes server, over
  stdio), i.e. five recorded steps.
* **baseline**: the same runs driven in this process through the gateway's own store
  functions (the very transactions the callbacks make: create, relay, claim, a step
  report per model call, tool authorisation and step report per tool call; the last
  step report completes the run) plus `XADD` / `XREADGROUP` / `XACK`, at the same
  concurrency, on a second throw-away database so the gateway's relay cannot see its
  rows. No HTTP, no worker, no model, no MCP: the floor storage sets.
* **baseline, the model call**: 300 model calls made in this process exactly as the
  worker makes them for an agent without a token or cost budget (`services.worker.llm`:
  the call plan, then LiteLLM to the same server), one at a time, timed in CPU: the
  ceiling LiteLLM alone sets on model steps per second per core.

Before those, the **overhead per step** (issue item 4) is taken from `--alone` one-step
and half as many three-step runs made one at a time (so no queueing enters), from each
run's steps (`GET /v1/runs/{id}/steps`) and timeline. `wall` is a step's own
`finished_at - started_at`: for a model step the call plan, the budget check and the
call through LiteLLM; for a tool step the MCP call. `timeline` is from the previous
step's end (the run's start for the first step) to this step's end, so it also holds the
previous step's report round trip (and a tool call's authorisation). The model's own time
is what `bench.llm_server` measured for that very request; the tool's own time is the
median of bare `notes.add` calls over stdio made by this process. `complete` is from
the last step's end to the run's (the final step's report, which completes the run).

`runs/s` is all runs of a phase over the time from the first one's creation to the last
one's end; `first 95 %` stops at the 95th percentile end, so a straggler (a run a
worker abandoned, recovered only after its lease expired and the sweeper re-published
it, 30 s or more later) does not hide the rate of the others.

With `--gateways N`, N gateway processes run on ports of their own (the way to use more
cores, docs/architecture.md "One process per port"); the clients are spread over them and
worker n calls gateway n.

Run: `.venv/bin/python -m bench.throughput [--runs 200] [--tool-runs 60] [--gateways 1]`
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import math
import os
import statistics
import sys
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime

import aiohttp
import asyncpg
from redis.asyncio import Redis

from bench.measure import CpuMeter, machine, ms, ratio, table
from bench.stack import BENCH, MODEL, PROJECT, SEAL, Stack, add_stack_args, open_stack
from services.contract.api import Agent, AgentCreate, Role, RunCreate
from services.contract.jobs import JobMessage, StreamNames
from services.contract.model_catalog import ModelCatalog
from services.contract.policy import PolicySet
from services.contract.runs import ModelParams, StepKind, StepStatus, Usage
from services.contract.tools import ToolSpec
from services.contract.worker_api import LeaseBody, StepReport, ToolAuthorization
from services.gateway.db.connections import connect, create_pool
from services.gateway.db.migrations import migrate
from services.gateway.outbox import OutboxRelay
from services.gateway.store import leases
from services.gateway.store.agents import create_version, get_version
from services.gateway.store.authorizations import authorize_tool
from services.gateway.store.keys import create_key
from services.gateway.store.policies import put_policy
from services.gateway.store.runs import NewRun, create_runs
from services.gateway.store.tools import replace_catalogue
from services.worker.llm import LLM
from services.worker.mcp_config import StdioServer
from services.worker.mcp_router import McpRouter
from services.worker.retry import Backoff
from testbed import servers
from testbed.streams import read_new
from testbed.waiting import eventually

CLIENTS = 16
TOOL = "notes.add"
ONE_STEP = AgentCreate(name="bench", model=MODEL)
TOOLS = AgentCreate(name="tools", model=MODEL, tools=[TOOL])
TERMINAL = ("completed", "failed", "cancelled", "budget_exceeded")
LEASE_SECONDS = 30.0
# The in-process baseline is one worker holding every lease it claims, as one key.


@dataclass
class Phase:
    name: str
    workers: int
    agent: str
    tool_calls: int
    runs: int


@dataclass
class Outcome:
    rate: float
    rate_95: float
    completed: int
    cpu: dict[str, float]
    run_ids: list[uuid.UUID]


async def _submit(stack: Stack, phase: Phase) -> list[uuid.UUID]:
    numbers = iter(range(phase.runs))
    ids: list[uuid.UUID] = []
    prefix = f"tools={phase.tool_calls} " if phase.tool_calls else ""

    async def client(gateway: int) -> None:
        # aiohttp: a quarter of httpx's CPU per request, which the clients would
        # otherwise take from the processes measured (bench.run_intake says more).
        async with aiohttp.ClientSession(
            base_url=stack.urls[gateway % len(stack.urls)],
            headers={"Authorization": f"Bearer {stack.admin_key}"},
        ) as api:
            for n in numbers:
                body = {"agent": phase.agent, "input": f"{prefix}{phase.name} {n}"}
                async with api.post("/v1/runs", json=body) as response:
                    response.raise_for_status()
                    ids.append(uuid.UUID((await response.json())["id"]))

    await asyncio.gather(*(client(i) for i in range(CLIENTS)))
    return ids


async def _settled(pool: asyncpg.Pool, ids: list[uuid.UUID], within: float) -> None:
    """Until every run ended, or `within` passed (a run a worker abandoned waits for its
    lease to expire and the sweeper to re-publish it: the table counts those)."""
    with contextlib.suppress(AssertionError):
        await eventually(
            lambda: pool.fetchval(
                "SELECT count(*) FROM runs WHERE id = ANY($1) AND status = ANY($2)", ids, TERMINAL
            ),
            lambda done: done == len(ids),
            within=within,
        )


async def _through_platform(stack: Stack, phase: Phase) -> Outcome:
    pids = stack.gateway_pids() | {w.worker_id: w.pid for w in stack.workers}
    pids |= {"model server": stack.llm_pid(), "clients": os.getpid()}
    cpu = CpuMeter(pids, postgres=True)
    cpu.start()
    with stack.profiled(phase.name):
        ids = await _submit(stack, phase)
        await _settled(stack.pool, ids, within=120)
    shares = cpu.read()
    rows = await stack.pool.fetch(
        """SELECT status, created_at, finished_at FROM runs WHERE id = ANY($1)
            ORDER BY finished_at NULLS LAST""",
        ids,
    )
    first = min(row["created_at"] for row in rows)
    ended = [row["finished_at"] for row in rows if row["finished_at"] is not None]
    fast = ended[: math.ceil(len(rows) * 0.95)]
    return Outcome(
        rate=len(ended) / (ended[-1] - first).total_seconds(),
        rate_95=len(fast) / (fast[-1] - first).total_seconds(),
        completed=sum(1 for row in rows if row["status"] == "completed"),
        cpu=shares,
        run_ids=ids,
    )


@contextlib.asynccontextmanager
async def _baseline_database(stack: Stack) -> AsyncIterator[asyncpg.Pool]:
    async with servers.throwaway_database(stack.admin_dsn) as dsn:
        conn = await connect(dsn, seal=SEAL)
        try:
            await migrate(conn)
            for spec in (ONE_STEP, TOOLS):
                await create_version(conn, PROJECT, spec, BENCH)
            rules = {"rules": [{"id": "bench", "tool": TOOL, "effect": "allow"}]}
            await put_policy(conn, PROJECT, PolicySet.model_validate(rules), BENCH)
        finally:
            await conn.close()
        pool = await create_pool(dsn, min_size=4, max_size=20, seal=SEAL)
        try:
            yield pool
        finally:
            await pool.close()


class _Baseline:
    """The platform's transactions and stream operations for whole runs, in-process."""

    def __init__(self, pool: asyncpg.Pool, redis: Redis, streams: StreamNames) -> None:
        self._pool = pool
        self._redis = redis
        self._streams = streams
        self._relay = OutboxRelay(pool, redis, streams, batch=500, poll_seconds=1.0, window=100_000)
        self._numbers = itertools.count()

    async def setup(self) -> None:
        await self._redis.xgroup_create(
            self._streams.runs, self._streams.group, id="0", mkstream=True
        )
        # The gateway authorises only tools the lease holder listed, as a worker does.
        async with self._pool.acquire() as conn:
            key, _ = await create_key(
                conn, f"baseline-{uuid.uuid4().hex[:8]}", Role.WORKER, None, BENCH
            )
        self._key = key.id
        server, _, tool = TOOL.partition(".")
        spec = ToolSpec(name=TOOL, server=server, tool=tool, idempotent=True)
        await replace_catalogue(self._pool, self._key, "baseline", [spec])

    async def _llm_step(
        self, run_id: uuid.UUID, lease: LeaseBody, seq: int, prompt: str, *, final: bool
    ) -> None:
        """A model call's step report; the final one completes the run."""
        messages = [{"role": "user", "content": prompt}]
        now = datetime.now(UTC)
        report = StepReport(
            epoch=lease.epoch,
            lease_token=lease.lease_token,
            seq=seq,
            kind=StepKind.LLM_CALL,
            status=StepStatus.COMPLETED,
            model=f"openai/{MODEL}",
            input={"messages": messages},
            output={"message": {"role": "assistant", "content": "done"}},
            usage=Usage(prompt_tokens=10, completion_tokens=1, total_tokens=11, cost_usd=0.0),
            started_at=now,
            finished_at=now,
            final_output="done" if final else None,
        )
        await leases.record_step(self._pool, run_id, report, LEASE_SECONDS, self._key)

    async def _tool_step(self, run_id: uuid.UUID, lease: LeaseBody, seq: int) -> None:
        ask = ToolAuthorization(
            epoch=lease.epoch,
            lease_token=lease.lease_token,
            seq=seq,
            tool=TOOL,
            tool_call_id=f"call_{seq}",
            arguments={"a": seq, "b": 1},
            idempotent=True,
        )
        await authorize_tool(self._pool, run_id, ask, self._key)
        now = datetime.now(UTC)
        report = StepReport(
            epoch=lease.epoch,
            lease_token=lease.lease_token,
            seq=seq,
            kind=StepKind.TOOL_CALL,
            status=StepStatus.COMPLETED,
            tool=TOOL,
            output=str(seq + 1),
            started_at=now,
            finished_at=now,
        )
        await leases.record_step(self._pool, run_id, report, LEASE_SECONDS, self._key)

    async def run(self, agent: Agent, tool_calls: int) -> None:
        """Create a run and carry *a* queued run (whichever the stream hands over) to its
        end: every client creates one and takes one, so the counts balance."""
        prompt = f"baseline {next(self._numbers)}"
        body = RunCreate(agent=agent.name, input=prompt)
        async with self._pool.acquire() as conn:
            await create_runs(conn, [NewRun(PROJECT, agent, body, None, None, BENCH, None)])
        await self._relay.publish_batch()
        [(entry_id, fields)] = await read_new(
            self._redis, self._streams.group, "baseline", self._streams.runs, 1, block_ms=10_000
        )
        run_id = JobMessage.from_fields(fields).run_id
        grant = await leases.claim(self._pool, run_id, "baseline", LEASE_SECONDS, self._key)
        seq = 1
        for turn in range(tool_calls + 1):
            final = turn == tool_calls
            await self._llm_step(run_id, grant.lease, seq, prompt, final=final)
            seq += 1
            if not final:
                await self._tool_step(run_id, grant.lease, seq)
                seq += 1
        await self._redis.xack(self._streams.runs, self._streams.group, entry_id)


async def _baseline(stack: Stack, pool: asyncpg.Pool, phase: Phase) -> float:
    redis = Redis.from_url(stack.redis_url, max_connections=CLIENTS * 2)
    streams = StreamNames(f"{stack.prefix}:baseline:{phase.name}")
    baseline = _Baseline(pool, redis, streams)
    await baseline.setup()
    agent = await get_version(pool, PROJECT, phase.agent, None)
    assert agent is not None
    remaining = iter(range(phase.runs))

    async def client() -> None:
        for _ in remaining:
            await baseline.run(agent, phase.tool_calls)

    started = time.perf_counter()
    try:
        await asyncio.gather(*(client() for _ in range(CLIENTS)))
    finally:
        await redis.aclose()
    return phase.runs / (time.perf_counter() - started)


async def _bare_tool_seconds(calls: int) -> list[float]:
    """The MCP call alone, over stdio from this process: the tool's own time."""
    router = McpRouter(
        {
            "notes": StdioServer(
                command=sys.executable,
                args=["-m", "testbed.mcp_servers.notes_server"],
                env={"NOTES_FILE": "/dev/null"},
            )
        }
    )
    await router.start()
    samples = []
    try:
        for n in range(calls):
            started = time.perf_counter()
            await router.call(TOOL, {"a": n, "b": 1})
            samples.append(time.perf_counter() - started)
    finally:
        await router.aclose()
    return samples


async def _model_call_cpu(stack: Stack, calls: int) -> list[float]:
    """CPU seconds of each model call made as the worker makes it for the bench's agent,
    which has no token or cost budget (`services.worker.llm`: the call plan, then LiteLLM
    to the bench model), in this process, one at a time: what
    one model step costs before the platform adds anything, so the ceiling it sets on
    runs/s per core is in the same table."""
    llm = LLM(ModelCatalog.load(stack.models_file), 30.0, Backoff(0, 0.1, 1.0))
    messages = [{"role": "user", "content": "hello"}]
    params = ModelParams()
    try:
        await llm.complete(MODEL, messages, params, tools=[], max_output_tokens=None)
        samples = []
        for _ in range(calls):
            began = time.process_time()
            plan = llm.plan(MODEL, messages, [], params, count_prompt=False)
            await llm.complete(
                MODEL, messages, params, tools=[], max_output_tokens=plan.max_output_tokens
            )
            samples.append(time.process_time() - began)
        return samples
    finally:
        await llm.aclose()


async def _alone(stack: Stack, agent: str, prefix: str) -> uuid.UUID:
    """One run with nothing else going on: started, then waited for."""
    async with stack.api() as api:
        body = {"agent": agent, "input": f"{prefix}alone {uuid.uuid4().hex}"}
        response = await api.post("/v1/runs", json=body)
        run_id = uuid.UUID(response.json()["id"])
    await _settled(stack.pool, [run_id], within=60)
    return run_id


async def _step_overheads(
    stack: Stack, ids: list[uuid.UUID], tool_seconds: float
) -> dict[str, dict[str, list[float]]]:
    """Per step kind: wall and timeline overhead samples (seconds), own time removed."""
    stats = await stack.llm_stats(reset=True)
    own = {(prompt, turn): seconds for prompt, turn, seconds in stats["timings"]}  # type: ignore[attr-defined]
    found: dict[str, dict[str, list[float]]] = {}

    def add(kind: str, series: str, value: float) -> None:
        found.setdefault(kind, {}).setdefault(series, []).append(value)

    async with stack.api() as api:
        for run_id in ids:
            run = (await api.get(f"/v1/runs/{run_id}")).json()
            steps = (await api.get(f"/v1/runs/{run_id}/steps")).json()["items"]
            boundary = datetime.fromisoformat(run["started_at"])
            turn = 0
            for step in steps:
                started = datetime.fromisoformat(step["started_at"])
                finished = datetime.fromisoformat(step["finished_at"])
                if step["kind"] == StepKind.LLM_CALL:
                    mine = own.get((run["input"], turn))
                    turn += 1
                    if mine is None:
                        continue
                    kind = "model call"
                else:
                    mine, kind = tool_seconds, "tool call"
                add(kind, "wall", (finished - started).total_seconds() - mine)
                add(kind, "timeline", (finished - boundary).total_seconds() - mine)
                add(kind, "own", mine)
                boundary = finished
            ended = datetime.fromisoformat(run["finished_at"])
            add("complete", "timeline", (ended - boundary).total_seconds())
    return found


async def bench(args: argparse.Namespace) -> None:
    phases = [
        Phase("one-step-1w", 1, "bench", 0, args.runs),
        Phase("tools-1w", 1, "tools", 2, args.tool_runs),
        Phase("one-step-2w", 2, "bench", 0, args.runs),
        Phase("tools-2w", 2, "tools", 2, args.tool_runs),
    ]
    phases = [phase for phase in phases if phase.runs > 0]
    rows = []
    async with open_stack(args) as stack:
        await stack.start_llm()
        for spec in (ONE_STEP, TOOLS):
            await stack.agent(spec)
        await stack.allow(TOOL)
        for _ in range(args.gateways):
            await stack.start_gateway()
        await stack.start_worker(tools=True)
        tool_seconds = statistics.median(await _bare_tool_seconds(200))
        model_cpu = await _model_call_cpu(stack, 300)
        await stack.llm_stats(reset=True)
        with stack.profiled("one-at-a-time"):
            alone = [await _alone(stack, "bench", "") for _ in range(args.alone)]
            alone += [await _alone(stack, "tools", "tools=2 ") for _ in range(args.alone // 2)]
        overheads = await _step_overheads(stack, alone, tool_seconds)
        async with _baseline_database(stack) as baseline_pool:
            for phase in phases:
                while len(stack.workers) < phase.workers:
                    await stack.start_worker(tools=True)
                await stack.llm_stats(reset=True)
                ours = await _through_platform(stack, phase)
                floor = await _baseline(stack, baseline_pool, phase)
                cpu = ", ".join(
                    f"{name} {share / ours.rate * 1000:.0f}" for name, share in ours.cpu.items()
                )
                busy = sum(ours.cpu.values())
                cpu += f"; all {busy / ours.rate * 1000:.0f} ({busy:.2f} cores busy)"
                rows.append(
                    [
                        "1 model call" if phase.tool_calls == 0 else "3 model + 2 tool calls",
                        phase.workers,
                        phase.runs,
                        phase.runs - ours.completed,
                        f"{ours.rate:.1f}",
                        f"{ours.rate_95:.1f}",
                        f"{floor:.1f}",
                        ratio(ours.rate, floor),
                        cpu,
                    ]
                )
                print(f"{phase.name}: {ours.rate:.1f} runs/s, baseline {floor:.1f}", flush=True)
    print(
        f"\nend-to-end throughput, {CLIENTS} submitting clients, {args.gateways} gateway "
        f"process(es), worker n on gateway n; {machine()}\n"
    )
    headers = [
        "runs",
        "workers",
        "n",
        "not completed",
        "FerrumDeck runs/s",
        "first 95 % /s",
        "baseline runs/s",
        "ratio",
        "CPU ms per run, by process (cores busy: CPU s per s)",
    ]
    print(table(headers, rows))
    ceiling = 1 / statistics.median(model_cpu)
    print(
        f"\nbaseline, one model call as the worker makes it (plan + LiteLLM), alone "
        f"in one process: CPU {ms(model_cpu, 50)} ms p50, {ms(model_cpu, 99)} ms p99 per "
        f"call, i.e. at most {ceiling:.0f} model calls/s per core before any platform work"
    )
    print(
        f"\nplatform overhead per step, runs one at a time ({args.alone} one-step, "
        f"{args.alone // 2} three-step; 1 worker; bare notes.add over stdio "
        f"{tool_seconds * 1000:.2f} ms, subtracted from tool steps)\n"
    )
    step_rows = [
        [
            kind,
            len(series["timeline"]),
            ms(series.get("own", []), 50),
            ms(series.get("wall", []), 50),
            ms(series.get("wall", []), 99),
            ms(series["timeline"], 50),
            ms(series["timeline"], 99),
        ]
        for kind, series in overheads.items()
    ]
    headers = [
        "step",
        "n",
        "own time p50 ms",
        "wall - own p50 ms",
        "p99 ms",
        "timeline - own p50 ms",
        "p99 ms",
    ]
    print(table(headers, step_rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=200, help="one-step runs per phase")
    parser.add_argument("--tool-runs", type=int, default=60, help="three-step runs per phase")
    parser.add_argument(
        "--alone", type=int, default=40, help="one-step runs made one at a time (overhead)"
    )
    parser.add_argument(
        "--gateways", type=int, default=1, help="gateway processes, each on its own port"
    )
    add_stack_args(parser)
    asyncio.run(bench(parser.parse_args()))


if __name__ == "__main__":
    main()
