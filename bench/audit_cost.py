"""What the audit append costs run creation, measured side by side in one run.

Run creation commits the run row and its outbox row in one transaction; with auditing
the same transaction also appends the `run.created` event (the chain is linked after
commit, off this path). This times both transactions at several concurrency levels on
a throw-away database, alternating rounds so both see the same machine.

Needs PostgreSQL: `FERRUMDECK_BENCH_POSTGRES` (an admin DSN, default the local server).

Run: `.venv/bin/python -m bench.audit_cost [runs-per-round]`
"""

from __future__ import annotations

import asyncio
import os
import secrets
import sys
import time
import uuid

import asyncpg

from services.contract.api import AgentCreate
from services.contract.audit_keys import AuditKeys
from services.contract.ids import uuid7
from services.gateway.audit import Actor, link_pending, record
from services.gateway.db.connections import connect, create_pool
from services.gateway.db.migrations import migrate
from services.gateway.store.agents import create_version

ADMIN_DSN = os.environ.get(
    "FERRUMDECK_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres"
)
ACTOR = Actor.key(uuid.uuid4(), "bench")


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


async def bench(runs: int) -> None:
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
        await pool.close()
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        await admin.close()


def main() -> None:
    asyncio.run(bench(int(sys.argv[1]) if len(sys.argv) > 1 else 1000))


if __name__ == "__main__":
    main()
