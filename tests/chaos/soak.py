"""Soak: integrations starting runs for minutes while workers are killed and restarted.

N clients start runs (quick ones, note-writing ones whose tool call is not idempotent,
slow model calls and slow tool calls, so kills land mid-call) for M minutes, one every
`--pause` seconds each, with an `Idempotency-Key` and retrying connection errors, 429
and 503. Meanwhile a chaos loop
sends SIGKILL to a random worker at random intervals and restarts it a few seconds later
(and with `--gateway`, now and then the gateway), and an operator rejects the retries of
tool calls whose outcome a killed worker left unknown, as the platform asks a human to.
Then the load stops, the system settles, and the ledger is read straight from PostgreSQL
and the notes file (`tests.support.chaos_ledger`, the chaos suite's invariants):

* accepted: runs a client got a 202 for;
* completed / failed: how they ended (failed includes dead-lettered ones);
* lost: accepted and never ended;
* duplicated: ended more often than started, a step recorded twice or a model answer
  recorded twice, or a note written twice.

Not a test and not in CI (the chaos suite is): run it by hand, for as long as you like.

    .venv/bin/python -m tests.chaos.soak --minutes 10 --clients 4 [--workers 3] [--pause 1]
        [--kill-every 20] [--gateway] [--seed N]

PostgreSQL and Redis default to the machine's (`--database-url` is an admin DSN: the
soak works in a throw-away database; `--redis-url` gets a throw-away key prefix); both
are removed afterwards. Exits 1 when anything was lost or duplicated.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from services.contract.runs import TERMINAL_STATUSES
from tests.support.chaos_ledger import Ledger, reckon
from tests.support.chaos_load import Integration, Workload, keep_starting
from tests.support.chaos_stack import ChaosStack, Slot, Tuning, chaos_stack

ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
REDIS_URL = "redis://127.0.0.1:6379/0"
# Timings longer than the chaos suite's: a soak keeps many more runs going on the same
# cores, and a lease shorter than a loaded gateway's latency only measures the machine.
# Workers take a few runs each at a time, as a deployment sized to its machine would, so
# a backlog builds in the stream, where backpressure sees it and answers 429, rather
# than in hundreds of half-served runs per worker.
TUNING = Tuning(
    lease_seconds=10,
    sweep_seconds=1,
    requeue_after_seconds=10,
    max_queue_lag=200,
    heartbeat_seconds=2,
    max_in_flight=16,
    reclaim_idle_seconds=15,
    max_deliveries=5,
    drain_seconds=5,
    log_level="WARNING",
)


@dataclass
class Chaos:
    """What the chaos loop and the operator did."""

    worker_kills: int = 0
    gateway_kills: int = 0
    rejected: int = 0
    reviving: set[asyncio.Task[None]] = field(default_factory=set)


def _mix(work: Workload, rng: random.Random) -> Callable[[], str]:
    """Which run a client starts next: mostly quick and note-writing ones, some slow
    enough in the model or in a tool call for a kill to land in the middle."""
    kinds: list[tuple[float, Callable[[], str]]] = [
        (0.40, work.quick),
        (0.35, work.noting),
        (0.15, lambda: work.slow(2)),
        (0.10, lambda: work.slow_tool(2)),
    ]
    weights = [w for w, _ in kinds]
    return lambda: rng.choices([k for _, k in kinds], weights)[0]()


async def _revive(slot: Slot, after: float) -> None:
    """Restart a killed slot after `after` seconds, as a service manager would, and warm
    the spare for its next death."""
    await asyncio.sleep(after)
    try:
        await slot.start()
    except AssertionError:
        return  # killed again while coming up: the chaos loop revives it once more
    slot.warm()


async def _pause(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)


async def chaos_loop(
    stack: ChaosStack,
    stop: asyncio.Event,
    chaos: Chaos,
    rng: random.Random,
    *,
    kill_every: float,
    gateway: bool,
) -> None:
    """SIGKILL a random live worker every `kill_every` seconds on average (and, with
    `gateway`, the gateway one time in eight); each comes back 1-5 s later."""
    while not stop.is_set():
        await _pause(stop, rng.expovariate(1 / kill_every))
        if stop.is_set():
            return
        victims = [w for w in stack.workers if w.alive]
        if gateway and stack.gateway.alive and rng.random() < 1 / 8:
            victims = [stack.gateway]
        if not victims:
            continue
        victim = rng.choice(victims)
        await victim.kill()
        if victim is stack.gateway:
            chaos.gateway_kills += 1
        else:
            chaos.worker_kills += 1
        task = asyncio.create_task(_revive(victim, rng.uniform(1, 5)))
        chaos.reviving.add(task)
        task.add_done_callback(chaos.reviving.discard)


async def operator(stack: ChaosStack, stop: asyncio.Event, chaos: Chaos) -> None:
    """Reject every pending approval: here they are all retries of a tool call a killed
    worker may or may not have made, and the safe answer is not to make it again."""
    while not stop.is_set():
        with contextlib.suppress(Exception):  # the gateway may be down right now
            pending = (await stack.api.get("/v1/approvals?status=pending&limit=200")).json()
            for approval in pending["items"]:
                decided = await stack.api.post(
                    f"/v1/approvals/{approval['id']}/reject",
                    json={"reason": "soak: the first call may have happened; not again"},
                )
                chaos.rejected += decided.status_code == 200
        await _pause(stop, 2)


async def _open_runs(stack: ChaosStack, run_ids: list[str]) -> int:
    open_runs: int = await stack.db.fetchval(
        "SELECT count(*) FROM runs WHERE id = ANY($1::uuid[]) AND NOT (status = ANY($2))",
        [uuid.UUID(r) for r in run_ids],
        [s.value for s in TERMINAL_STATUSES],
    )
    return open_runs


async def settle(stack: ChaosStack, run_ids: list[str], within: float) -> float:
    """Wait, up to `within` seconds, for every accepted run to end; the seconds taken."""
    started = time.monotonic()
    while time.monotonic() - started < within:
        if not await _open_runs(stack, run_ids):
            break
        await asyncio.sleep(1)
    return time.monotonic() - started


def report(
    args: argparse.Namespace,
    ledger: Ledger,
    chaos: Chaos,
    integration: Integration,
    load_seconds: float,
    settle_seconds: float,
    intact: bool,
) -> None:
    completed = ledger.statuses["completed"]
    rows: list[tuple[str, Any]] = [
        ("accepted", ledger.accepted),
        ("completed", completed),
        ("failed", ledger.statuses["failed"]),
        (
            "other endings (cancelled, over budget)",
            sum(ledger.statuses[s] for s in ("cancelled", "budget_exceeded")),
        ),
        ("lost (accepted, never ended)", ledger.lost),
        ("duplicated (ended twice, step twice, note twice)", ledger.duplicated),
        ("runs nobody was told about", len(ledger.strangers)),
        ("accepted runs/s (load phase)", f"{ledger.accepted / load_seconds:.2f}"),
        ("completed runs/s (load + settle)", f"{completed / (load_seconds + settle_seconds):.2f}"),
        ("workers killed (SIGKILL)", chaos.worker_kills),
        ("gateway killed (SIGKILL)", chaos.gateway_kills),
        ("unknown tool outcomes a human declined", chaos.rejected),
        ("client answers", dict(sorted(integration.seen.items()))),
        ("client connection errors", sum(integration.errors.values())),
        ("settled after s", f"{settle_seconds:.0f}"),
        ("audit chain intact", intact),
    ]
    print(
        f"soak: {args.minutes:g} min, {args.clients} clients (a run each per "
        f"~{args.pause:g}s), {args.workers} workers, "
        f"a kill every ~{args.kill_every:g}s{' (gateway too)' if args.gateway else ''}, "
        f"nproc={os.cpu_count()}"
    )
    width = max(len(label) for label, _ in rows)
    print(f"{'':-<{width + 24}}")
    for label, value in rows:
        print(f"{label:<{width}}  {value!s:>20}")
    for what, runs in ledger.problems().items():
        print(f"{what}: {len(runs)}, e.g. {runs[:5]}")


async def soak(args: argparse.Namespace) -> int:
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory(prefix="ferrumdeck-soak-") as directory:
        async with chaos_stack(
            Path(directory),
            admin_dsn=args.database_url,
            redis_url=args.redis_url,
            tuning=TUNING,
            workers=args.workers,
        ) as stack:
            agent = await stack.agent("soak")
            work = Workload(stack.llm, "soak")
            integration = Integration(stack.url, stack.admin_key, patience=120)
            chaos = Chaos()
            stop_load, stop_operator = asyncio.Event(), asyncio.Event()
            started = time.monotonic()
            tasks = [
                asyncio.create_task(
                    keep_starting(
                        integration,
                        agent,
                        _mix(work, rng),
                        stop_load,
                        clients=args.clients,
                        pause=args.pause,
                    )
                ),
                asyncio.create_task(
                    chaos_loop(
                        stack,
                        stop_load,
                        chaos,
                        rng,
                        kill_every=args.kill_every,
                        gateway=args.gateway,
                    )
                ),
            ]
            approvals = asyncio.create_task(operator(stack, stop_operator, chaos))
            await asyncio.sleep(args.minutes * 60)
            stop_load.set()
            await asyncio.gather(*tasks)
            load_seconds = time.monotonic() - started
            await asyncio.gather(*chaos.reviving)
            await stack.up()
            run_ids = list(integration.accepted)
            settle_seconds = await settle(stack, run_ids, args.settle)
            stop_operator.set()
            await approvals
            ledger = await reckon(stack.db, run_ids, stack.notes(), [agent])
            verification = (await stack.api.get("/v1/audit/verify")).json()
            await integration.aclose()
            report(
                args,
                ledger,
                chaos,
                integration,
                load_seconds,
                settle_seconds,
                bool(verification["intact"]),
            )
    clean = ledger.lost == 0 and ledger.duplicated == 0 and not ledger.strangers
    return 0 if clean and verification["intact"] else 1


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m tests.chaos.soak",
        description="Integrations starting runs while workers are killed and restarted.",
    )
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument(
        "--pause", type=float, default=1.0, help="seconds each client waits between runs"
    )
    parser.add_argument("--kill-every", type=float, default=20.0, help="mean seconds between kills")
    parser.add_argument("--gateway", action="store_true", help="kill the gateway now and then too")
    parser.add_argument("--settle", type=float, default=180.0, help="max seconds to settle")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--database-url", default=ADMIN_DSN, help="a PostgreSQL admin DSN")
    parser.add_argument("--redis-url", default=REDIS_URL)
    args = parser.parse_args()
    sys.exit(asyncio.run(soak(args)))


if __name__ == "__main__":
    main()
