"""How many runs the gateway accepts per second, next to what its storage alone can do.

`POST /v1/runs` is the front door of every integration, and its cost is the ceiling of
everything behind it. This drives real gateway processes (`--gateways N`, each on its
own port, as an operator runs more of them) with 1, 8, 32 and 128 concurrent
keep-alive clients (one aiohttp session and connection each, spread round-robin,
calling back to back) and counts `202`s, with two baselines measured in the same run at
the same concurrency, alternating with the gateway so all three see the same machine:

* the run-creation transaction itself (run + outbox + audit rows), issued from this
  process with asyncpg by the gateway's own `store.runs.create_runs`, one run per
  statement, on a pool of the gateway's default size (20): the floor the database sets;
* `XADD` of a job alone, with redis-py: the floor the stream sets.

No worker runs, so the stream only grows; the gateway's backlog bound is lifted so it
keeps accepting. `gateway CPU` is the gateway processes' CPU time per second of wall
time (1.00 is one core: at 1.00 a single gateway process, not the database, is the
limit), `load generator CPU` this process's;
`CPU ms per run` divides it by the rate, which a busy machine distorts far less than
latency: 1,000 runs/s on one core needs under 1 ms.

Run: `.venv/bin/python -m bench.run_intake [--seconds 4] [--clients 1,8,32,128] [--gateways 1]`
"""

from __future__ import annotations

import argparse
import asyncio
import os
from collections.abc import Awaitable, Callable

import aiohttp
from redis.asyncio import Redis

from bench.measure import CpuMeter, Series, closed_loop, machine, ms, ratio, table
from bench.stack import BENCH, MODEL, PROJECT, SEAL, Stack, add_stack_args, open_stack
from services.contract.api import AgentCreate, RunCreate
from services.gateway.db.connections import create_pool
from services.gateway.store.agents import get_version
from services.gateway.store.runs import NewRun, create_runs

GATEWAY_POOL = 20  # GatewaySettings.db_pool_max's default
BODY = {"agent": "bench", "input": "intake"}


def _aiohttp_starter(session: aiohttp.ClientSession) -> Callable[[], Awaitable[None]]:
    async def start() -> None:
        async with session.post("/v1/runs", json=BODY) as response:
            await response.read()
            if response.status != 202:
                raise RuntimeError(f"{response.status}")

    return start


async def _through_gateways(
    stack: Stack, clients: int, seconds: float
) -> tuple[Series, dict[str, float]]:
    """Clients spread round-robin over the gateways, one keep-alive connection each.
    aiohttp rather than httpx drives the load: on a shared two-core box the load
    generator's own CPU is taken from the gateway, and aiohttp needs about a quarter of
    httpx's per request (0.20 vs 0.84 ms of CPU per keep-alive GET measured here)."""
    sessions = [
        aiohttp.ClientSession(
            base_url=stack.urls[i % len(stack.urls)],
            headers={"Authorization": f"Bearer {stack.admin_key}"},
            connector=aiohttp.TCPConnector(limit=1),
        )
        for i in range(clients)
    ]
    cpu = CpuMeter(stack.gateway_pids() | {"load": os.getpid()})
    cpu.start()
    with stack.profiled(f"intake-{clients}"):
        series = await closed_loop([_aiohttp_starter(s) for s in sessions], seconds)
    shares = cpu.read()
    for session in sessions:
        await session.close()
    return series, shares


async def _transaction_only(stack: Stack, clients: int, seconds: float) -> Series:
    size = min(clients, GATEWAY_POOL)
    pool = await create_pool(stack.dsn, min_size=size, max_size=size, seal=SEAL)
    agent = await get_version(pool, PROJECT, "bench", None)
    assert agent is not None
    body = RunCreate.model_validate(BODY)

    async def create() -> None:
        async with pool.acquire() as conn:
            await create_runs(conn, [NewRun(PROJECT, agent, body, None, None, BENCH, None)])

    try:
        return await closed_loop([create] * clients, seconds)
    finally:
        await pool.close()


async def _xadd_only(stack: Stack, clients: int, seconds: float) -> Series:
    redis = Redis.from_url(stack.redis_url, max_connections=clients)
    stream = f"{stack.prefix}:baseline"

    async def xadd() -> None:
        await redis.xadd(stream, {"run_id": "0190a0a0-0000-7000-8000-000000000000"})

    try:
        return await closed_loop([xadd] * clients, seconds)
    finally:
        await redis.aclose()


async def bench(args: argparse.Namespace) -> None:
    levels = [int(n) for n in args.clients.split(",")]
    rows = []
    async with open_stack(args) as stack:
        await stack.agent(AgentCreate(name="bench", model=MODEL))
        for _ in range(args.gateways):
            await stack.start_gateway(FERRUMDECK_MAX_QUEUE_LAG="100000000")
        for clients in levels:
            gateway, shares = await _through_gateways(stack, clients, args.seconds)
            cpu = sum(v for k, v in shares.items() if k.startswith("gateway"))
            tx = await _transaction_only(stack, clients, args.seconds)
            xadd = await _xadd_only(stack, clients, args.seconds)
            rows.append(
                [
                    clients,
                    f"{gateway.rate:.0f}",
                    ms(gateway.latencies, 50),
                    ms(gateway.latencies, 99),
                    f"{cpu:.2f}",
                    f"{cpu / gateway.rate * 1000:.1f}" if gateway.rate else "n/a",
                    f"{shares['load']:.2f}",
                    gateway.errors,
                    f"{tx.rate:.0f}",
                    ms(tx.latencies, 50),
                    ms(tx.latencies, 99),
                    f"{xadd.rate:.0f}",
                    ms(xadd.latencies, 50),
                    ms(xadd.latencies, 99),
                    ratio(gateway.rate, tx.rate),
                    ratio(gateway.rate, xadd.rate),
                ]
            )
            print(f"{clients} clients: {gateway.rate:.0f} runs/s accepted", flush=True)
    print(
        f"\nrun intake, {args.gateways} gateway process(es), {args.seconds:g} s per series; "
        f"{machine()}\n"
    )
    headers = [
        "clients",
        "POST /v1/runs /s",
        "p50 ms",
        "p99 ms",
        "gateway CPU",
        "CPU ms per run",
        "load generator CPU",
        "errors",
        "create tx /s",
        "p50 ms",
        "p99 ms",
        "XADD /s",
        "p50 ms",
        "p99 ms",
        "gateway ÷ tx",
        "gateway ÷ XADD",
    ]
    print(table(headers, rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=4.0, help="per series and level")
    parser.add_argument("--clients", default="1,8,32,128", help="concurrency levels")
    parser.add_argument(
        "--gateways", type=int, default=1, help="gateway processes, each on its own port"
    )
    add_stack_args(parser)
    asyncio.run(bench(parser.parse_args()))


if __name__ == "__main__":
    main()
