"""Fair dispatch: how long one project's run waits while another floods the platform.

Project A creates runs as fast as the intake takes them (`--clients` concurrent clients,
`--flood` runs); meanwhile project B creates one run a second. Each of B's runs is timed
from its `POST /v1/runs` to its claim (`started_at`): the time it waited for a worker.
The same flood is then run with A alone, so the table shows what fairness costs A's
throughput next to what it gives B. One gateway, one worker, the bench model answering
at once: the worker, not the model, is the bottleneck, as in the issue's measurement (B's
one run started 26 s after A's 2,000, behind 1,901 of them).

Run: `.venv/bin/python -m bench.fairness [--flood 2000] [--clients 32]`
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
import uuid

import asyncpg
import httpx

from bench.measure import machine, ms, table
from bench.stack import BENCH, MODEL, Stack, add_stack_args, open_stack
from services.contract.api import AgentCreate, Role
from services.gateway.store.agents import create_version
from services.gateway.store.keys import create_key

QUIET = "quiet"


async def _quiet_client(stack: Stack) -> httpx.AsyncClient:
    async with stack.pool.acquire() as conn:
        _, secret = await create_key(conn, "bench-quiet", Role.ADMIN, QUIET, BENCH)
        await create_version(conn, QUIET, AgentCreate(name="bench", model=MODEL), BENCH)
    return httpx.AsyncClient(
        base_url=stack.url, headers={"Authorization": f"Bearer {secret}"}, timeout=60
    )


async def _flood(stack: Stack, runs: int, clients: int) -> tuple[list[uuid.UUID], float]:
    """A's runs, created as fast as the gateway takes them; their ids and the creation
    time of the first."""
    remaining = iter(range(runs))
    ids: list[uuid.UUID] = []
    started = time.time()

    async def client() -> None:
        async with stack.api() as api:
            for n in remaining:
                while True:
                    response = await api.post(
                        "/v1/runs", json={"agent": "bench", "input": f"flood {n}"}
                    )
                    if response.status_code != 429:
                        break
                    await asyncio.sleep(float(response.headers.get("Retry-After", "1")))
                ids.append(uuid.UUID(response.json()["id"]))

    await asyncio.gather(*(client() for _ in range(clients)))
    return ids, started


async def _trickle(quiet: httpx.AsyncClient, stop: asyncio.Event) -> list[tuple[uuid.UUID, float]]:
    """B's runs, one a second until `stop`; each with when its POST was sent."""
    sent: list[tuple[uuid.UUID, float]] = []
    while not stop.is_set():
        at = time.time()
        response = await quiet.post("/v1/runs", json={"agent": "bench", "input": "quiet"})
        assert response.status_code == 202, response.text
        sent.append((uuid.UUID(response.json()["id"]), at))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 1.0)
    return sent


async def _settled(stack: Stack, ids: list[uuid.UUID]) -> list[asyncpg.Record]:
    while True:
        rows = await stack.pool.fetch(
            "SELECT id, status, started_at, finished_at FROM runs WHERE id = ANY($1)", ids
        )
        if all(r["finished_at"] is not None for r in rows) and len(rows) == len(ids):
            return list(rows)
        await asyncio.sleep(0.2)


async def _round(stack: Stack, flood: int, clients: int, with_quiet: bool) -> list[object]:
    stop = asyncio.Event()
    quiet = await _quiet_client(stack) if with_quiet else None
    trickle = asyncio.create_task(_trickle(quiet, stop)) if quiet is not None else None
    try:
        ids, first = await _flood(stack, flood, clients)
        done = await _settled(stack, ids)
        stop.set()
        sent = await trickle if trickle is not None else []
    finally:
        if quiet is not None:
            await quiet.aclose()
    last = max(r["finished_at"] for r in done).timestamp()
    throughput = len(ids) / (last - first)
    waits: list[float] = []
    to_stream: list[float] = []
    if sent:
        rows = await _settled(stack, [run_id for run_id, _ in sent])
        when = {run_id: at for run_id, at in sent}
        waits = [r["started_at"].timestamp() - when[r["id"]] for r in rows]
        to_stream = await _dispatch_seconds(stack, list(when))
    label = "A floods, B one run a second" if with_quiet else "A alone"
    return [
        label,
        len(ids),
        f"{throughput:.0f}",
        len(waits) or "—",
        ms(waits, 50) if waits else "—",
        ms(waits, 99) if waits else "—",
        f"{max(waits) * 1000:.0f}" if waits else "—",
        ms(to_stream, 50) if to_stream else "—",
    ]


async def _dispatch_seconds(stack: Stack, ids: list[uuid.UUID]) -> list[float]:
    """For each run, from its creation to its job's publication (the `run.dispatched`
    event): the part of the wait spent in the outbox rather than in the stream and the
    worker."""
    rows = await stack.pool.fetch(
        """SELECT c.created_at AS created, min(d.created_at) AS dispatched
             FROM audit_events c JOIN audit_events d ON d.target = c.target
            WHERE c.action = 'run.created' AND d.action = 'run.dispatched'
              AND c.target = ANY($1)
            GROUP BY c.target, c.created_at""",
        [f"run:{run_id}" for run_id in ids],
    )
    return [(r["dispatched"] - r["created"]).total_seconds() for r in rows]


async def bench(args: argparse.Namespace) -> None:
    async with open_stack(args) as stack:
        await stack.start_llm()
        await stack.agent(AgentCreate(name="bench", model=MODEL))
        await stack.start_gateway(
            **({"FERRUMDECK_DISPATCH_WINDOW": str(args.window)} if args.window else {})
        )
        await stack.start_worker()
        rows = [
            await _round(stack, args.flood, args.clients, with_quiet=False),
            await _round(stack, args.flood, args.clients, with_quiet=True),
        ]
    window = args.window or "default"
    print(
        f"\nfair dispatch, {args.flood} runs from A, {args.clients} clients, dispatch window "
        f"{window}; {machine()}\n"
    )
    print(
        table(
            ["round", "A's runs", "A runs/s", "B's runs", "B wait p50 ms", "B wait p99 ms",
             "B wait max ms", "B in outbox p50 ms"],
            rows,
        )
    )  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--flood", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument(
        "--window", type=int, default=0, help="the gateway's dispatch window (default: its own)"
    )
    add_stack_args(parser)
    asyncio.run(bench(parser.parse_args()))


if __name__ == "__main__":
    main()
