"""How long a run waits between its `202` and a worker claiming it.

Dispatch is the outbox relay (woken by the request that committed the run), the stream,
the worker's `XREADGROUP` and its claim callback; an integration sees it as the time
before anything happens. This starts a real gateway and worker (`--workers`, model
answering at once), measures the gateway's maximum intake in this run (32 clients back
to back, `--max-seconds`) unless `--rate` gives it, then starts runs open-loop, at a
fixed rate whatever the answers' latency:

* **idle**: 2 runs/s for 15 s, so each run is alone in the system;
* **half capacity**: 50 % of what the workers end per second (measured as they work off
  the runs the intake phase left), the busiest load the stack sustains without a queue;
* **half load**: 50 % of the measured maximum intake, as the benchmarks issue asks. When
  the gateway accepts runs faster than the workers end them, runs queue here and their
  wait grows with the phase's length: that row measures the queue, not dispatch.

Latency is from the moment this process has a run's `202` (wall clock) to the run's
`started_at`, which the claim transaction sets (`now()`, its start; the audit's
`run.claimed` carries the same time); everything is on one host, so the clocks agree. A
negative value means the worker claimed the run before the client had read its
answer. The baseline is raw Redis at the same rates: from just before a job is `XADD`ed
to the time a consumer blocked in `XREADGROUP` on another connection has it.

To show where the time goes, each run's dispatch is also split by the database's clock
(transaction start times): from the creating transaction to the relay's (its
`run.dispatched` audit event), and from there to the claim.

Run: `.venv/bin/python -m bench.dispatch_latency [--workers 1] [--rate R] [--seconds 8]`
(`--seconds` is the half-load phase's length)
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from dataclasses import dataclass

import httpx
from redis.asyncio import Redis

from bench.measure import closed_loop, machine, ms, open_loop, percentile, ratio, table
from bench.stack import MODEL, Stack, add_stack_args, open_stack, starter
from services.contract.api import AgentCreate
from testbed.streams import read_new
from testbed.waiting import eventually

IDLE_RATE = 2.0  # one run every 500 ms: each is alone in the system, workers idle between
IDLE_SECONDS = 15.0
BODY = {"agent": "bench", "input": "dispatch"}


async def _max_intake(stack: Stack, seconds: float) -> float:
    https = [stack.api() for _ in range(32)]
    series = await closed_loop([starter(http, BODY) for http in https], seconds)
    for http in https:
        await http.aclose()
    return series.rate


async def _drained(stack: Stack) -> None:
    """No run left open, so the next phase starts from an empty queue."""
    await eventually(
        lambda: stack.pool.fetchval(
            "SELECT count(*) FROM runs WHERE status IN ('queued', 'running')"
        ),
        lambda still_open: still_open == 0,
        within=180,
    )


async def _drain_rate(stack: Stack) -> float:
    """Runs ended per second while the workers work off what the intake phase left: what
    the stack sustains end to end. Intake alone outruns the workers, so at half of it
    runs queue and their wait grows with the phase; at half of this they do not."""
    waiting = await stack.pool.fetchval(
        "SELECT count(*) FROM runs WHERE status IN ('queued', 'running')"
    )
    began = time.monotonic()
    await _drained(stack)
    return float(waiting) / (time.monotonic() - began)


@dataclass
class Dispatch:
    """Seconds per run: 202 read to claim, and the two legs inside the gateway's clock
    (run committed to the relay's publishing transaction; that to the claim)."""

    latencies: list[float]
    to_relay: list[float]
    to_claim: list[float]


async def _dispatch(stack: Stack, rate: float, seconds: float, phase: str) -> Dispatch:
    received: dict[uuid.UUID, float] = {}
    limits = httpx.Limits(max_connections=512, max_keepalive_connections=512)
    async with stack.api(limits=limits) as api:

        async def start(_: int) -> None:
            response = await api.post("/v1/runs", json=BODY)
            response.raise_for_status()
            received[uuid.UUID(response.json()["id"])] = time.time()

        with stack.profiled(phase):
            series = await open_loop(start, rate, seconds)
    if series.errors:
        print(f"{phase}: {series.errors} runs not accepted", flush=True)
    await _drained(stack)
    rows = await stack.pool.fetch(
        """SELECT r.id, extract(epoch FROM r.started_at)::float8 AS claimed,
                  extract(epoch FROM r.created_at)::float8 AS created,
                  extract(epoch FROM min(e.created_at))::float8 AS relayed
             FROM runs r JOIN audit_events e
               ON e.target = 'run:' || r.id AND e.action = 'run.dispatched'
            WHERE r.id = ANY($1) GROUP BY r.id""",
        list(received),
    )
    return Dispatch(
        [row["claimed"] - received[row["id"]] for row in rows],
        [row["relayed"] - row["created"] for row in rows],
        [row["claimed"] - row["relayed"] for row in rows],
    )


async def _raw(redis_url: str, stream: str, rate: float, seconds: float) -> list[float]:
    """XADD at `rate`; a consumer in a group blocked in XREADGROUP takes each entry. Timed
    from just before the XADD is sent (its reply can reach this process after the
    consumer's), so the baseline includes the XADD round trip."""
    producer = Redis.from_url(redis_url, max_connections=64)
    consumer = Redis.from_url(redis_url)
    group = f"{stream}:group"
    await consumer.xgroup_create(stream, group, id="$", mkstream=True)
    sent: dict[bytes, float] = {}
    latencies: list[float] = []
    count = int(rate * seconds)

    async def consume() -> None:
        while len(latencies) < count:
            entries = await read_new(consumer, group, "c", stream, 100, block_ms=1000)
            now = time.perf_counter()
            latencies.extend(now - sent.pop(fields[b"job"]) for _, fields in entries)

    async def add(_: int) -> None:
        job = uuid.uuid4().hex
        sent[job.encode()] = time.perf_counter()
        await producer.xadd(stream, {"job": job})

    reader = asyncio.create_task(consume())
    try:
        await open_loop(add, rate, seconds)
        async with asyncio.timeout(30):
            await reader
    finally:
        reader.cancel()
        await producer.aclose()
        await consumer.aclose()
    return latencies


async def bench(args: argparse.Namespace) -> None:
    rows: list[list[object]] = []
    async with open_stack(args) as stack:
        await stack.start_llm()
        await stack.agent(AgentCreate(name="bench", model=MODEL))
        await stack.start_gateway()
        for _ in range(args.workers):
            await stack.start_worker()
        maximum = args.rate or await _max_intake(stack, args.max_seconds)
        capacity = await _drain_rate(stack)
        print(f"maximum intake {maximum:.0f} runs/s, workers end {capacity:.0f}/s", flush=True)
        levels = (
            ("idle", IDLE_RATE, IDLE_SECONDS),
            ("half capacity", capacity / 2, args.seconds),
            ("half load", maximum / 2, args.seconds),
        )
        for phase, rate, seconds in levels:
            found = await _dispatch(stack, rate, seconds, phase.replace(" ", "-"))
            ours = found.latencies
            raw = await _raw(stack.redis_url, f"{stack.prefix}:raw:{len(rows)}", rate, seconds)
            early = sum(1 for value in ours if value < 0)
            rows.append(
                [
                    phase,
                    f"{rate:.0f}",
                    len(ours),
                    early,
                    ms(ours, 50),
                    ms(ours, 99),
                    ms(raw, 50),
                    ms(raw, 99),
                    ratio(percentile(ours, 50), percentile(raw, 50)),
                    ratio(percentile(ours, 99), percentile(raw, 99)),
                    ms(found.to_relay, 50),
                    ms(found.to_relay, 99),
                    ms(found.to_claim, 50),
                    ms(found.to_claim, 99),
                ]
            )
            print(f"{phase}: p50 {ms(ours, 50)} ms, p99 {ms(ours, 99)} ms", flush=True)
    print(
        f"\ndispatch latency (202 -> claim), {args.workers} worker(s), maximum intake "
        f"{maximum:.0f} runs/s measured with the workers running; {machine()}\n"
    )
    headers = [
        "load",
        "runs/s",
        "n",
        "claimed before 202 read",
        "FerrumDeck p50 ms",
        "p99 ms",
        "XADD->XREADGROUP p50 ms",
        "p99 ms",
        "ratio p50",
        "ratio p99",
        "create tx -> relay tx p50 ms",
        "p99 ms",
        "relay tx -> claim p50 ms",
        "p99 ms",
    ]
    print(table(headers, rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--rate", type=float, help="maximum intake, runs/s (default: measure)")
    parser.add_argument("--seconds", type=float, default=8.0, help="per load level")
    parser.add_argument("--max-seconds", type=float, default=3.0, help="measuring max intake")
    add_stack_args(parser)
    asyncio.run(bench(parser.parse_args()))


if __name__ == "__main__":
    main()
