"""The operators' deck through a burst: 5,000 runs created at 500/s while it is watched.

The deck must stay responsive and true while the platform is busiest, which is when an
operator looks. This starts a real stack (`bench.stack`: gateway, worker(s), model
server), creates 100 runs, starts the deck headless in its own process
(`bench.deck_probe`, on the Runs screen at 160x45), then creates `--runs` more at
`--rate` per second with an open loop (aiohttp, 32 connections), as independent clients
would, whatever the answers' latency. The worker(s) run them meanwhile, so the deck sees
every kind of run event: created, claimed, each step, finished. It reports:

* key-press-to-repaint p50 / p99 (and max) during the burst: `down`/`up` on the runs
  table, from sending the key to the first frame drawn with the cursor moved;
* the deck process's CPU over the burst, as a share of one core;
* convergence: seconds from the last run accepted until the deck's newest screenful of
  rows and its pending badge equal the API.

`--deck-path DIR` measures the deck (`tui/`, `services/client/`) of another checkout
against this stack, e.g. `git worktree add /tmp/deck-base main` for today's figures.

Run: `.venv/bin/python -m bench.deck_burst [--runs 5000] [--rate 500] [--workers 1]
[--deck-path DIR]`
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import sys
import time
from pathlib import Path

import aiohttp

from bench.measure import machine, open_loop, percentile, table
from bench.stack import MODEL, Stack, add_stack_args, open_stack
from services.contract.api import AgentCreate

HERE = Path(__file__).resolve().parents[1]
BODY = {"agent": "bench", "input": "burst"}
BEFORE = 100


async def _create(stack: Stack, runs: int, rate: float) -> tuple[float, int]:
    """`runs` runs at `rate` per second; returns the rate reached and the failures."""
    connector = aiohttp.TCPConnector(limit=32)
    async with aiohttp.ClientSession(
        stack.url,
        connector=connector,
        headers={"Authorization": f"Bearer {stack.admin_key}"},
    ) as session:

        async def one(_: int) -> None:
            async with session.post("/v1/runs", json=BODY) as response:
                await response.read()
                if response.status != 202:
                    raise RuntimeError(str(response.status))

        series = await open_loop(one, rate, runs / rate)
    return len(series.latencies) / series.seconds, series.errors


async def _line(process: asyncio.subprocess.Process) -> str:
    assert process.stdout is not None
    line = (await process.stdout.readline()).decode().strip()
    if not line:
        raise SystemExit(f"the deck probe exited ({await process.wait()})")
    return line


async def bench(args: argparse.Namespace) -> dict[str, object]:
    async with open_stack(args) as stack:
        await stack.start_llm()
        await stack.agent(AgentCreate(name="bench", model=MODEL))
        await stack.start_gateway(FERRUMDECK_MAX_QUEUE_LAG="100000000")
        for _ in range(args.workers):
            await stack.start_worker()
        await _create(stack, BEFORE, 200)
        probe = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench.deck_probe",
            stack.url,
            stack.admin_key,
            str(args.deck_path),
            cwd=HERE,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": str(HERE)},
        )
        assert probe.stdin is not None
        try:
            if await _line(probe) != "ready":
                raise SystemExit("the deck probe did not start")
            probe.stdin.write(b"burst\n")
            await probe.stdin.drain()
            reached, failed = await _create(stack, args.runs, args.rate)
            probe.stdin.write(f"end {time.time()}\n".encode())
            await probe.stdin.drain()
            result: dict[str, object] = json.loads(await _line(probe))
        finally:
            try:
                await asyncio.wait_for(probe.wait(), 30)
            except TimeoutError:
                probe.kill()
                await probe.wait()
        result.update(reached=reached, failed=failed)
        return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5000)
    parser.add_argument("--rate", type=float, default=500.0)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--deck-path", type=Path, default=HERE, help="checkout whose deck runs")
    parser.add_argument("--json", action="store_true", help="print the raw result as well")
    add_stack_args(parser)
    args = parser.parse_args()
    result = asyncio.run(bench(args))
    latencies = result["latencies"]
    assert isinstance(latencies, list)
    converged = result["converged"]
    cpu = result["cpu"]
    assert isinstance(cpu, float)
    print(
        f"deck through a burst of {args.runs} runs at {args.rate:.0f}/s "
        f"(reached {result['reached']:.0f}/s, {result['failed']} failed), "
        f"{args.workers} worker(s), deck {args.deck_path}"
    )
    print(machine())
    print(
        table(
            ["measure", "target", "value"],
            [
                ["key presses timed", "—", len(latencies)],
                ["key presses never shown (60 s)", "0", result["key_timeouts"]],
                ["key-press-to-repaint p50 ms", "—", f"{percentile(latencies, 50) * 1000:.0f}"],
                ["key-press-to-repaint p99 ms", "≤ 150", f"{percentile(latencies, 99) * 1000:.0f}"],
                [
                    "key-press-to-repaint max ms",
                    "—",
                    f"{max(latencies, default=math.nan) * 1000:.0f}",
                ],
                ["deck CPU % of a core", "≤ 30", f"{cpu * 100:.0f}"],
                [
                    "convergence after the burst s",
                    "≤ 2",
                    "never (180 s)" if converged is None else f"{converged:.2f}",
                ],
                ["rows in the table at the end", "—", result["rows"]],
            ],
        )
    )
    if result.get("mismatch"):
        print("still different at the end:", result["mismatch"])
    if args.json:
        print(json.dumps(result))


if __name__ == "__main__":
    main()
