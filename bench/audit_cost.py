"""What the audit append costs run creation, measured side by side in one run.

Run creation commits the run row and its outbox row in one transaction; with auditing
the same transaction also appends the `run.created` event (the chain is linked after
commit, off this path), and since issue 17 seals it: a MAC computed in Python and a
unique index on it. This times the transaction without an event, with an unsealed one
(as before the MACs) and with a sealed one, at several concurrency levels on a
throw-away database, rounds interleaved so all three see the same machine; the ratio is
of medians.

Then verification of a long chain (`--chain`, a million events by default): the events
are inserted by one statement and linked under a key in bulk, then `verify_project`
walks the chain in a fresh process, streamed as it is now, and, as the baseline, the
way it was before issue 17: every event loaded into a list first. Each process reports
events/s and its peak RSS.

Needs PostgreSQL: `FERRUMDECK_BENCH_POSTGRES` (an admin DSN, default the local server).

Run: `.venv/bin/python -m bench.audit_cost [runs-per-round] [--rounds N] [--chain EVENTS]`
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import resource
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime

import asyncpg

from services.contract.api import AgentCreate
from services.contract.audit import GENESIS, link_hash, verify
from services.contract.audit_keys import AuditKeys
from services.contract.audit_mac import EventSeal
from services.contract.ids import uuid7
from services.gateway.audit import Actor, link_pending, record, verify_project
from services.gateway.db.connections import connect, create_pool
from services.gateway.db.migrations import migrate
from services.gateway.store.agents import create_version
from services.gateway.store.audit_trail import EVENT_COLUMNS, chained_events, to_event

ADMIN_DSN = os.environ.get(
    "FERRUMDECK_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres"
)
ACTOR = Actor.key(uuid.uuid4(), "bench")
CHAIN_PROJECT = "bench-chain"
# The key the chain is linked and sealed under and the verifying processes check it with.
CHAIN_KEYS = AuditKeys.of(["bench-audit-key-" + "b" * 32])
SEAL = EventSeal(CHAIN_KEYS)
MODES = ("none", "unsealed", "sealed")


async def _create(pool: asyncpg.Pool, mode: str) -> None:
    async with pool.acquire() as conn, conn.transaction():
        run_id = uuid7()
        await conn.execute(
            """INSERT INTO runs (project, id, agent_name, agent_version, status, input, metadata)
               VALUES ('default', $1, 'bench', 1, 'queued', 'hello', '{}')""",
            run_id,
        )
        await conn.execute(
            "INSERT INTO outbox (run_id, reason, project) VALUES ($1, 'created', 'default')",
            run_id,
        )
        if mode == "sealed":
            await record(
                conn, "default", ACTOR, "run.created", f"run:{run_id}", {"agent": "bench@1"}
            )
        elif mode == "unsealed":
            await conn.execute(
                """INSERT INTO audit_events (project, actor, actor_kind, action, target,
                                             details, request_id)
                   VALUES ('default', $1, 'key', 'run.created', $2, $3, NULL)""",
                ACTOR.audited,
                f"run:{run_id}",
                {"agent": "bench@1"},
            )


async def _round(pool: asyncpg.Pool, mode: str, runs: int, concurrency: int) -> float:
    queue = iter(range(runs))

    async def client() -> None:
        for _ in queue:
            await _create(pool, mode)

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    return runs / (time.perf_counter() - started)


def _seal_cost_us() -> float:
    started = time.process_time()
    for n in range(20_000):
        SEAL.seal(
            project="default",
            actor=ACTOR.audited,
            actor_kind="key",
            action="run.created",
            target=f"run:{n}",
            details={"agent": "bench@1"},
            request_id=None,
        )
    return (time.process_time() - started) / 20_000 * 1e6


async def bench(runs: int, chain: int, rounds: int) -> None:
    database = f"fdbench_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(ADMIN_DSN)
    await admin.execute(f'CREATE DATABASE "{database}"')
    dsn = ADMIN_DSN.rsplit("/", 1)[0] + f"/{database}"
    try:
        conn = await connect(dsn, seal=SEAL)
        await migrate(conn)
        await create_version(conn, "default", AgentCreate(name="bench", model="openai/x"), ACTOR)
        await conn.close()
        pool = await create_pool(dsn, seal=SEAL, min_size=4, max_size=40)
        print(
            f"run creation transactions, median of {rounds} rounds of {runs}, "
            f"nproc={os.cpu_count()}, load {os.getloadavg()[0]:.2f}"
        )
        print(f"sealing one event: {_seal_cost_us():.1f} µs of CPU")
        print(
            f"{'clients':>8} {'no event /s':>12} {'unsealed /s':>12} {'sealed /s':>10} "
            f"{'sealed ÷ unsealed':>18}"
        )
        for concurrency in (1, 8, 32):
            rates: dict[str, list[float]] = {mode: [] for mode in MODES}
            for _ in range(rounds):
                for mode in MODES:
                    rates[mode].append(await _round(pool, mode, runs, concurrency))
            none, unsealed, sealed = (statistics.median(rates[mode]) for mode in MODES)
            print(
                f"{concurrency:>8} {none:>12.0f} {unsealed:>12.0f} {sealed:>10.0f} "
                f"{sealed / unsealed:>18.3f}"
            )
        # The unsealed rounds' events read as forged (they are, by the chainer's lights):
        # link them out of the way, quietly, then time the chainer on sealed events.
        logging.getLogger("services.gateway.audit").setLevel(logging.CRITICAL)
        while await link_pending(pool, CHAIN_KEYS):
            pass
        for _ in range(5):
            await _round(pool, "sealed", 1000, 8)
        started = time.perf_counter()
        linked = 0
        while step := await link_pending(pool, CHAIN_KEYS):
            linked += step
        rate = linked / (time.perf_counter() - started)
        print(f"chainer linked {linked} sealed events, checking each MAC, at {rate:.0f}/s")
        if chain:
            await _verify_chain(pool, dsn, chain)
        await pool.close()
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        await admin.close()


async def _build_chain(pool: asyncpg.Pool, events: int) -> float:
    """`events` sealed events copied in, then linked under CHAIN_KEYS in bulk (what the
    chainer does, a batch of 10,000 at a time); returns the linking rate."""
    at = datetime.now(UTC)
    async with pool.acquire() as conn:
        for start in range(0, events, 10_000):
            rows = []
            for n in range(start + 1, min(start + 10_000, events) + 1):
                details = {"seq": n, "kind": "llm", "status": "completed"}
                sealed = SEAL.seal(
                    project=CHAIN_PROJECT,
                    actor="bench-worker (key)",
                    actor_kind="worker",
                    action="step.recorded",
                    target=f"run:{n}",
                    details=details,
                    request_id=None,
                    created_at=at,
                )
                rows.append(
                    (
                        CHAIN_PROJECT,
                        "bench-worker (key)",
                        "worker",
                        "step.recorded",
                        f"run:{n}",
                        json.dumps(details),
                        sealed.created_at,
                        sealed.key_id,
                        sealed.mac,
                    )
                )
            await conn.execute(
                """INSERT INTO audit_events (project, actor, actor_kind, action, target,
                                             details, created_at, mac_key_id, mac)
                   SELECT p, a, k, x, t, d::jsonb, c, i, m
                     FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],
                                 $6::text[], $7::timestamptz[], $8::text[], $9::text[])
                          AS r(p, a, k, x, t, d, c, i, m)""",
                *(list(column) for column in zip(*rows, strict=True)),
            )
    keys = CHAIN_KEYS
    started = time.perf_counter()
    prev, seq, links = GENESIS, 0, []
    async with pool.acquire() as conn, conn.transaction():
        async for row in conn.cursor(
            f"""SELECT {EVENT_COLUMNS} FROM audit_events e
                  LEFT JOIN audit_chain c ON c.event_id = e.id
                 WHERE e.project = $1 ORDER BY e.id""",
            CHAIN_PROJECT,
            prefetch=10_000,
        ):
            event = to_event(row)
            seq += 1
            digest = link_hash(keys, prev, event)
            links.append((event.id, CHAIN_PROJECT, seq, prev, digest, keys.current_id))
            prev = digest
            if len(links) == 10_000:
                await _copy_links(conn, links)
                links = []
        await _copy_links(conn, links)
    return seq / (time.perf_counter() - started)


async def _copy_links(conn: asyncpg.Connection, links: Sequence[tuple[object, ...]]) -> None:
    await conn.copy_records_to_table(
        "audit_chain",
        records=links,
        columns=["event_id", "project", "seq", "prev_hash", "hash", "key_id"],
    )


async def _verify_chain(pool: asyncpg.Pool, dsn: str, events: int) -> None:
    print(f"\nverifying a chain of {events:,} events (each in a fresh process)")
    print(f"linked in bulk at {await _build_chain(pool, events):,.0f} events/s")
    print(f"{'verify':>22} {'events':>10} {'events/s':>10} {'peak RSS MB':>12}")
    for how in ("held (before)", "streamed (now)"):
        done = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "bench.audit_cost", "--verify-child", how, dsn],
            capture_output=True,
            text=True,
            check=True,
        )
        found = json.loads(done.stdout)
        print(
            f"{how:>22} {found['events']:>10,} {found['events'] / found['seconds']:>10,.0f} "
            f"{found['peak_rss_kb'] / 1024:>12,.0f}"
        )


async def _verify_child(how: str, dsn: str) -> None:
    """One verification, alone in this process, so its peak RSS is its own."""
    keys = CHAIN_KEYS
    pool = await create_pool(dsn, min_size=1, max_size=1)
    try:
        started = time.perf_counter()
        if how.startswith("held"):
            async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read"):
                held = [event async for event in chained_events(conn, CHAIN_PROJECT)]
            verification = verify(held, keys)
        else:
            verification = await verify_project(pool, CHAIN_PROJECT, keys)
        seconds = time.perf_counter() - started
    finally:
        await pool.close()
    assert verification.intact, verification
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"events": verification.events, "seconds": seconds, "peak_rss_kb": peak}))


def main() -> None:
    parser = argparse.ArgumentParser(prog="bench.audit_cost")
    parser.add_argument("runs", nargs="?", type=int, default=1000, help="runs per round")
    parser.add_argument("--chain", type=int, default=1_000_000, help="events (0: skip)")
    parser.add_argument("--rounds", type=int, default=11, help="rounds per mode and level")
    parser.add_argument("--verify-child", nargs=2, metavar=("HOW", "DSN"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.verify_child:
        asyncio.run(_verify_child(*args.verify_child))
    else:
        asyncio.run(bench(args.runs, args.chain, args.rounds))


if __name__ == "__main__":
    main()
