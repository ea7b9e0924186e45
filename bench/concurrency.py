"""How many slow model calls one worker process holds at once, and at what memory.

Real model calls take seconds, so a worker's worth is how many runs it keeps in flight
while it waits, without losing leases to its own busyness. This starts a gateway, queues
`--runs` runs while no worker is up, then starts **one** worker with
`FERRUMDECK_MAX_IN_FLIGHT=--max-in-flight` against a model that answers every call after
`--llm-seconds` (2 s), and samples every 0.25 s until all runs have ended:

* in flight: the worker's `ferrumdeck_worker_runs_in_flight` gauge (its `/metrics`), and
  the model server's count of requests open at once (the calls really being waited on);
* the worker's resident memory (RSS), idle before the first job and at its peak;
* runs/s: runs ended, from the first claim to the last end;
* leases lost by mistake: runs not `completed`, lease refusals (`stale_epoch`,
  `run_not_running`, runs dropped or abandoned) in the worker's log, `run.republished`
  audit events (the sweeper re-queued a run whose lease expired), and
  `ferrumdeck_worker_claims_total{outcome="refused"}`.

The baselines are the floor of holding the same calls open in Python: a fresh process
making the same number of model calls at once to the same server, with aiohttp, and with
httpx (the client the worker's gateway callbacks and LiteLLM's OpenAI SDK use).

Run: `.venv/bin/python -m bench.concurrency [--runs 1200] [--max-in-flight 2000]`
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
import sys
import time
from dataclasses import dataclass

import aiohttp
import httpx
import psutil

from bench.measure import machine, table
from bench.stack import MODEL, Stack, Worker, add_stack_args, open_stack
from services.contract.api import AgentCreate
from testbed.waiting import eventually

CLIENTS = 32
BARE_CLIENTS = ("aiohttp", "httpx")
LEASE_REFUSALS = re.compile(r"stale_epoch|run_not_running|lease_held")
ABANDONED = re.compile(r"abandoned")


async def _queue(stack: Stack, runs: int) -> None:
    numbers = iter(range(runs))

    async def client() -> None:
        async with stack.api() as api:
            for n in numbers:
                body = {"agent": "bench", "input": f"concurrency {n}"}
                (await api.post("/v1/runs", json=body)).raise_for_status()

    await asyncio.gather(*(client() for _ in range(CLIENTS)))


@dataclass
class Sampled:
    peak_in_flight: float | None = None
    peak_rss_mb: float = 0.0
    unanswered: int = 0
    finished: bool = False


async def _sample(stack: Stack, worker: Worker, runs: int, within: float) -> Sampled:
    """Peaks of the in-flight gauge and RSS until every run ended or `within` passed, and
    how often `/metrics` did not answer within 2 s (not up yet, or the worker's event
    loop too busy to serve it)."""
    process = psutil.Process(worker.pid)
    seen = Sampled()
    deadline = time.monotonic() + within
    async with httpx.AsyncClient(timeout=2) as http:
        while time.monotonic() < deadline:
            try:
                gauge = await worker.metric(http, "ferrumdeck_worker_runs_in_flight")
            except httpx.HTTPError:
                seen.unanswered += 1
            else:
                seen.peak_in_flight = max(seen.peak_in_flight or 0.0, sum(gauge.values()))
            seen.peak_rss_mb = max(seen.peak_rss_mb, process.memory_info().rss / 1e6)
            ended = await stack.pool.fetchval(
                "SELECT count(*) FROM runs WHERE status NOT IN ('queued', 'running')"
            )
            if ended == runs:
                seen.finished = True
                return seen
            await asyncio.sleep(0.25)
    return seen


async def _refused_claims(worker: Worker) -> str:
    try:
        async with httpx.AsyncClient(timeout=10) as http:
            claims = await worker.metric(http, "ferrumdeck_worker_claims_total")
    except httpx.HTTPError:
        return "no answer"
    refused = sum(v for labels, v in claims.items() if 'outcome="refused"' in labels)
    return f"{refused:.0f}"


async def _idle_rss(worker: Worker) -> float:
    """The worker's RSS once it has imported everything, just before it reads jobs:
    its probes start answering right before it joins the consumer group."""
    process = psutil.Process(worker.pid)
    async with httpx.AsyncClient(timeout=0.5) as http:
        for _ in range(300):
            with contextlib.suppress(httpx.HTTPError):
                if (await http.get(f"{worker.metrics_url}/healthz")).status_code == 200:
                    break
            await asyncio.sleep(0.05)
    return float(process.memory_info().rss / 1e6)


async def _bare(llm_url: str, calls: int, client: str) -> tuple[float, float]:
    """The same calls from a fresh Python process: (seconds, peak RSS MB)."""
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.concurrency",
        "--bare",
        client,
        llm_url,
        str(calls),
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await child.communicate()
    found = json.loads(out.decode().strip().splitlines()[-1])
    return found["seconds"], found["rss_mb"]


async def _bare_calls(client: str, llm_url: str, calls: int) -> dict[str, float]:
    """Runs in the child: `calls` chat completions at once with `client` (httpx, what the
    worker uses, or aiohttp), RSS sampled meanwhile."""
    process = psutil.Process()
    peak = 0.0
    url = f"{llm_url}/v1/chat/completions"
    body = {"model": MODEL, "messages": [{"role": "user", "content": "bare"}]}
    limits = httpx.Limits(max_connections=calls, max_keepalive_connections=calls)
    async with (
        httpx.AsyncClient(limits=limits, timeout=120) as http,
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=calls)) as session,
    ):

        async def call() -> None:
            if client == "httpx":
                (await http.post(url, json=body)).raise_for_status()
                return
            async with session.post(url, json=body) as response:
                response.raise_for_status()
                await response.read()

        started = time.perf_counter()
        pending = [asyncio.create_task(call()) for _ in range(calls)]
        while not all(task.done() for task in pending):
            peak = max(peak, process.memory_info().rss / 1e6)
            await asyncio.sleep(0.1)
        for task in pending:
            task.result()
        seconds = time.perf_counter() - started
    return {"seconds": seconds, "rss_mb": peak}


async def bench(args: argparse.Namespace) -> None:
    calls = min(args.runs, args.max_in_flight)
    async with open_stack(args) as stack:
        await stack.start_llm(delay_seconds=args.llm_seconds)
        await stack.agent(AgentCreate(name="bench", model=MODEL))
        await stack.start_gateway(FERRUMDECK_MAX_QUEUE_LAG="100000000")
        await _queue(stack, args.runs)
        print(f"{args.runs} runs queued", flush=True)
        await eventually(
            lambda: stack.pool.fetchval("SELECT count(*) FROM outbox"), lambda n: n == 0
        )
        await stack.llm_stats(reset=True)
        worker = await stack.start_worker(
            ready=False, FERRUMDECK_MAX_IN_FLIGHT=str(args.max_in_flight)
        )
        idle_rss = await _idle_rss(worker)
        with stack.profiled("concurrency"):
            seen = await _sample(stack, worker, args.runs, args.within)
        llm = await stack.llm_stats()
        row = await stack.pool.fetchrow(
            """SELECT min(started_at) AS first, max(finished_at) AS last,
                      count(*) FILTER (WHERE finished_at IS NOT NULL) AS ended,
                      count(*) FILTER (WHERE status = 'completed') AS completed
                 FROM runs"""
        )
        republished = await stack.pool.fetchval(
            "SELECT count(*) FROM audit_events WHERE action = 'run.republished'"
        )
        refused = await _refused_claims(worker)
        log = worker.service.log()
        bare = {client: await _bare(stack.llm_url, calls, client) for client in BARE_CLIENTS}
    span = (row["last"] - row["first"]).total_seconds() if row["ended"] else 0.0
    print(
        f"\none worker, model answering after {args.llm_seconds:g} s, {args.runs} runs queued "
        f"before it started, FERRUMDECK_MAX_IN_FLIGHT={args.max_in_flight}, "
        f"{'all ended' if seen.finished else f'stopped after {args.within:g} s'}; {machine()}\n"
    )
    headers = [
        "series",
        "runs",
        "peak in flight",
        "peak model calls open",
        "ended",
        "completed",
        "runs/s",
        "RSS idle MB",
        "RSS peak MB",
        "/metrics unanswered",
        "abandoned (log)",
        "lease refusals (log)",
        "republished",
        "claims refused",
    ]
    rows = [
        [
            "FerrumDeck worker",
            args.runs,
            "no answer" if seen.peak_in_flight is None else f"{seen.peak_in_flight:.0f}",
            llm["peak"],
            row["ended"],
            row["completed"],
            f"{row['ended'] / span:.1f}" if span else "0",
            f"{idle_rss:.0f}",
            f"{seen.peak_rss_mb:.0f}",
            seen.unanswered,
            len(ABANDONED.findall(log)),
            len(LEASE_REFUSALS.findall(log)),
            republished,
            refused,
        ],
        *(
            [
                f"baseline: the same calls at once, plain {client}",
                calls,
                calls,
                calls,
                calls,
                calls,
                f"{calls / seconds:.1f}",
                "",
                f"{rss:.0f}",
                *[""] * 5,
            ]
            for client, (seconds, rss) in bare.items()
        ),
    ]
    print(table(headers, rows))


def main() -> None:
    if len(sys.argv) == 5 and sys.argv[1] == "--bare":
        found = asyncio.run(_bare_calls(sys.argv[2], sys.argv[3], int(sys.argv[4])))
        print(json.dumps(found))
        return
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=1200)
    parser.add_argument("--max-in-flight", type=int, default=2000)
    parser.add_argument("--llm-seconds", type=float, default=2.0)
    parser.add_argument(
        "--within", type=float, default=90.0, help="stop watching after this many seconds"
    )
    add_stack_args(parser)
    asyncio.run(bench(parser.parse_args()))


if __name__ == "__main__":
    main()
