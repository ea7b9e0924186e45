"""The full tool-authorisation round trip, next to a bare round trip to the same gateway.

Every tool call a run makes waits for `POST /v1/worker/runs/{id}/tools/authorize`: the
key looked up, the run locked, the budget checked, the policy evaluated (see
`bench.policy_eval` for the evaluation alone) and the step recorded with its decision,
in one transaction. `bench.tool_call_overhead` times it beside the MCP call; this script
puts it beside the two floors it sits on, interleaved call by call on one gateway:

* `GET /healthz` with the same kind of client: HTTP, hypercorn and Quart, no database;
* the same authorisation done in this process by the gateway's own store function
  (`store.authorizations.authorize_tool`) on asyncpg: the database work, no HTTP.

Each claimed run takes `--calls-per-run` authorisations (allowed by policy, each a new
step, as a run calling tools one after another does), so later calls of a run also pay
for reading the run's earlier tool steps (`calls_in_run`, `identical_in_a_row`).

Run: `.venv/bin/python -m bench.authorize_roundtrip [--calls 1000] [--calls-per-run 10]`
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from functools import partial

import httpx

from bench.measure import machine, ms, percentile, ratio, table
from bench.stack import MODEL, SEAL, Stack, add_stack_args, open_stack
from services.contract.api import AgentCreate
from services.contract.runs import Budget
from services.contract.tools import ToolSpec
from services.contract.worker_api import CatalogueReport, LeaseBody, ToolAuthorization
from services.gateway.db.connections import create_pool
from services.gateway.store.authorizations import authorize_tool
from services.worker.gateway_client import GatewayClient

TOOL = "bench.lookup"
ARGS = {"query": "ferrumdeck", "limit": 10}


async def _claimed_runs(
    stack: Stack, gateway: GatewayClient, count: int
) -> list[tuple[uuid.UUID, LeaseBody]]:
    claimed = []
    async with stack.api() as api:
        for _ in range(count):
            response = await api.post("/v1/runs", json={"agent": "bench", "input": "authorize"})
            run_id = uuid.UUID(response.json()["id"])
            grant = await gateway.claim(run_id, "bench-worker")
            claimed.append((run_id, grant.lease))
    return claimed


def _asks(
    runs: list[tuple[uuid.UUID, LeaseBody]], per_run: int
) -> list[tuple[uuid.UUID, ToolAuthorization]]:
    return [
        (
            run_id,
            ToolAuthorization(
                epoch=lease.epoch,
                lease_token=lease.lease_token,
                seq=seq,
                tool=TOOL,
                tool_call_id=f"call_{seq}",
                arguments=ARGS,
            ),
        )
        for run_id, lease in runs
        for seq in range(1, per_run + 1)
    ]


async def _timed(samples: list[float], action: Callable[[], Awaitable[object]]) -> None:
    started = time.perf_counter()
    await action()
    samples.append(time.perf_counter() - started)


async def bench(args: argparse.Namespace) -> None:
    runs_needed = -(-args.calls // args.calls_per_run)
    healthz: list[float] = []
    direct: list[float] = []
    http: list[float] = []
    async with open_stack(args) as stack:
        await stack.agent(
            AgentCreate(name="bench", model=MODEL, tools=["bench.*"], budget=Budget(max_steps=1000))
        )
        await stack.allow("bench.*")
        # Never called, but a claim checks that the agent's model is one the gateway offers.
        await stack.start_llm()
        await stack.start_gateway()
        gateway = GatewayClient(stack.url, stack.worker_key)
        pool = await create_pool(stack.dsn, min_size=2, max_size=2, seal=SEAL)
        try:
            # The gateway authorises only tools the lease holder listed, as a worker does.
            server, _, tool = TOOL.partition(".")
            spec = ToolSpec(name=TOOL, server=server, tool=tool)
            await gateway.report_tools(CatalogueReport(worker_id="bench-worker", tools=[spec]))
            over_http = _asks(await _claimed_runs(stack, gateway, runs_needed), args.calls_per_run)
            in_process = _asks(await _claimed_runs(stack, gateway, runs_needed), args.calls_per_run)
            # The store checks the lease is the claiming key's, as the route does.
            key_id = await pool.fetchval(
                "SELECT lease_key FROM runs WHERE id = $1", in_process[0][0]
            )
            async with httpx.AsyncClient(base_url=stack.url) as bare:
                with stack.profiled("authorize"):
                    for (run_a, ask_a), (run_b, ask_b) in zip(
                        over_http[: args.calls], in_process[: args.calls], strict=True
                    ):
                        await _timed(healthz, partial(bare.get, "/healthz"))
                        await _timed(direct, partial(authorize_tool, pool, run_b, ask_b, key_id))
                        await _timed(http, partial(gateway.authorize_tool, run_a, ask_a))
        finally:
            await pool.close()
            await gateway.aclose()
    print(
        f"\ntool authorisation round trip, {args.calls} calls, {args.calls_per_run} per run; "
        f"{machine()}\n"
    )
    base = percentile(healthz, 50)
    rows = [
        [
            label,
            len(samples),
            ms(samples, 50),
            ms(samples, 99),
            ratio(percentile(samples, 50), base),
        ]
        for label, samples in (
            ("baseline: GET /healthz round trip", healthz),
            ("baseline: authorize transaction in-process (store, asyncpg)", direct),
            ("FerrumDeck: POST .../tools/authorize round trip", http),
        )
    ]
    print(table(["series", "n", "p50 ms", "p99 ms", "p50 ÷ healthz p50"], rows))
    print(
        f"\nround trip minus its transaction: p50 "
        f"{(percentile(http, 50) - percentile(direct, 50)) * 1000:.2f} ms; "
        f"ratio to the transaction alone {ratio(percentile(http, 50), percentile(direct, 50))}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--calls-per-run", type=int, default=10)
    add_stack_args(parser)
    asyncio.run(bench(parser.parse_args()))


if __name__ == "__main__":
    main()
