"""What the audit append costs run creation, measured side by side in one run.

Run creation commits the run row and its outbox row in one transaction; with auditing
the same transaction also appends the `run.created` event (the chain is linked after
commit, off this path). This times both transactions at several concurrency levels on
a throw-away database, alternating rounds so both see the same machine.

Then verification of a long chain (`--chain`, a million events by default): the events
are inserted by one statement and linked under a key in bulk, then `verify_project`
walks the chain in a fresh process, streamed as it is now, and, as the baseline, the
way it was before issue 17: every event loaded into a list first. Each process reports
events/s and its peak RSS.

Needs PostgreSQL: `FERRUMDECK_BENCH_POSTGRES` (an admin DSN, default the local server).

Run: `.venv/bin/python -m bench.audit_cost [runs-per-round] [--chain EVENTS]`
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import secrets
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence

import asyncpg

from services.contract.api import AgentCreate
from services.contract.audit import GENESIS, link_hash, verify
from services.contract.audit_keys import AuditKeys
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
# The key the chain is linked under and the verifying processes check it with.
CHAIN_KEY = "bench-audit-key-" + "b" * 32


async def _create(pool: asyncpg.Pool, audited: bool) -> None:
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
        if audited:
            await record(
                conn, "default", ACTOR, "run.created", f"run:{run_id}", {"agent": "bench@1"}
            )


async def _round(pool: asyncpg.Pool, audited: bool, runs: int, concurrency: int) -> float:
    queue = iter(range(runs))

    async def client() -> None:
        for _ in queue:
            await _create(pool, audited)

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    return runs / (time.perf_counter() - started)


async def bench(runs: int, chain: int) -> None:
    database = f"fdbench_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(ADMIN_DSN)
    await admin.execute(f'CREATE DATABASE "{database}"')
    dsn = ADMIN_DSN.rsplit("/", 1)[0] + f"/{database}"
    try:
        conn = await connect(dsn)
        await migrate(conn)
        await create_version(conn, "default", AgentCreate(name="bench", model="openai/x"), ACTOR)
        await conn.close()
        pool = await create_pool(dsn, min_size=4, max_size=40)
        print(f"run creation transactions, {runs} per round, nproc={os.cpu_count()}")
        print(f"{'clients':>8} {'without audit /s':>18} {'with audit /s':>15} {'ratio':>7}")
        for concurrency in (1, 8, 32):
            plain: list[float] = []
            audited: list[float] = []
            for _ in range(3):
                plain.append(await _round(pool, False, runs, concurrency))
                audited.append(await _round(pool, True, runs, concurrency))
            best_plain, best_audited = max(plain), max(audited)
            print(
                f"{concurrency:>8} {best_plain:>18.0f} {best_audited:>15.0f} "
                f"{best_audited / best_plain:>7.2f}"
            )
        started = time.perf_counter()
        linked = 0
        keys = AuditKeys.of([secrets.token_urlsafe(32)])
        while step := await link_pending(pool, keys):
            linked += step
        print(f"chainer linked {linked} events at {linked / (time.perf_counter() - started):.0f}/s")
        if chain:
            await _verify_chain(pool, dsn, chain)
        await pool.close()
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        await admin.close()


async def _build_chain(pool: asyncpg.Pool, events: int) -> float:
    """`events` events in one statement, then linked under CHAIN_KEY in bulk (what the
    chainer does, a batch of 10,000 at a time); returns the linking rate."""
    await pool.execute(
        """INSERT INTO audit_events (project, actor, actor_kind, action, target, details)
           SELECT $1, 'bench-worker (key)', 'worker', 'step.recorded', 'run:' || g,
                  jsonb_build_object('seq', g, 'kind', 'llm', 'status', 'completed')
             FROM generate_series(1, $2::int) g""",
        CHAIN_PROJECT,
        events,
    )
    keys = AuditKeys.of([CHAIN_KEY])
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
    keys = AuditKeys.of([CHAIN_KEY])
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
    parser.add_argument("--verify-child", nargs=2, metavar=("HOW", "DSN"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.verify_child:
        asyncio.run(_verify_child(*args.verify_child))
    else:
        asyncio.run(bench(args.runs, args.chain))


if __name__ == "__main__":
    main()
