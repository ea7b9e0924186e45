"""How fast the operators' deck paints, and how much memory it holds, over 10,000 runs.

The deck must stay usable on a busy installation: it fetches runs a page at a time and
never the whole history. This script seeds 10,000 runs straight into a throw-away
database (SQL, in one statement), serves it with a real gateway process, then starts the
deck headless in a fresh Python process and times, from before the deck is imported:

* dashboard first paint: the first frame of the dashboard screen;
* dashboard data: run and queue figures shown (first SSE queue sample included);
* runs screen: pressing `2` until the first page of runs is on screen;
* 2,000 runs loaded: holding page-down until 2,000 rows were fetched and shown;

and the process's resident memory (RSS) after each.

Needs PostgreSQL and Redis: `FERRUMDECK_BENCH_POSTGRES` (an admin DSN, default the local
server) and `FERRUMDECK_BENCH_REDIS`.

Run: `.venv/bin/python -m bench.tui_startup [runs]`
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import asyncpg

from bench.stack import AUDIT_KEY, SEAL
from services.devstack.embedded import free_port
from services.gateway.db.connections import connect
from services.gateway.db.migrations import migrate
from testbed.processes import serving

ADMIN_DSN = os.environ.get(
    "FERRUMDECK_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres"
)
REDIS_URL = os.environ.get("FERRUMDECK_BENCH_REDIS", "redis://127.0.0.1:6379/0")
SIZE = (140, 45)


async def _has_project(conn: asyncpg.Connection, table: str) -> bool:
    return bool(
        await conn.fetchval(
            """SELECT count(*) FROM information_schema.columns
                WHERE table_schema = current_schema() AND table_name = $1
                  AND column_name = 'project'""",
            table,
        )
    )


async def _seed(dsn: str, runs: int) -> str:
    """`runs` runs of four agents over the last week, newest every few seconds; returns an
    admin key's secret."""
    conn = await connect(dsn, seal=SEAL)
    try:
        await migrate(conn)
        project = await _has_project(conn, "runs")
        secret = "fd_" + secrets.token_urlsafe(32)
        await conn.execute(
            f"""INSERT INTO api_keys (id, name, role, key_hash{", project" if project else ""})
                VALUES ($1, 'bench', 'admin', $2{", 'default'" if project else ""})""",
            uuid.uuid4(),
            hashlib.sha256(secret.encode()).hexdigest(),
        )
        await conn.execute(
            f"""INSERT INTO agents (name, version, model, system_prompt, budget
                                    {", project" if project else ""})
                SELECT 'agent-' || n, 1, 'openai/x', '', '{{"max_steps": 20}}'
                       {", 'default'" if project else ""}
                  FROM generate_series(1, 4) AS n"""
        )
        # ids must sort like creation times (UUIDv7): the millisecond timestamp in front.
        await conn.execute(
            f"""INSERT INTO runs (id, agent_name, agent_version, status, input,
                                  prompt_tokens, completion_tokens, cost_usd, steps_count,
                                  created_at, finished_at{", project" if project else ""})
                SELECT (lpad(to_hex((extract(epoch FROM t) * 1000)::bigint), 12, '0')
                        || '7000' || '8000' || lpad(to_hex(n), 12, '0'))::uuid,
                       'agent-' || (n % 4 + 1), 1,
                       (ARRAY['completed', 'completed', 'completed', 'failed',
                              'cancelled', 'running', 'queued'])[n % 7 + 1],
                       'bench input ' || n, 300 + n % 500, 50 + n % 90, (n % 50) / 10000.0,
                       1 + n % 6, t, t + interval '20 seconds'
                       {", 'default'" if project else ""}
                  FROM generate_series(1, $1) AS n,
                       LATERAL (SELECT now() - ($1 - n) * interval '60 seconds' AS t) AS at""",
            runs,
        )
        return secret
    finally:
        await conn.close()


def _rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        pages = int(statm.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 1e6


async def _measure(url: str, key: str) -> dict[str, tuple[float, float]]:
    """Runs in a fresh process: times from before the deck is imported."""
    started = time.perf_counter()
    from textual.css.query import NoMatches
    from textual.pilot import Pilot
    from textual.widgets import DataTable, Static

    from services.client import AsyncFerrumDeck
    from tui.app import FerrumDeckApp

    marks: dict[str, tuple[float, float]] = {}

    def mark(name: str) -> None:
        marks[name] = (time.perf_counter() - started, _rss_mb())
        print(f"{name}: {marks[name][0]:.2f} s", file=sys.stderr, flush=True)

    async def until(pilot: Pilot[None], condition: Callable[[], bool]) -> None:
        deadline = time.monotonic() + 60
        while not condition():
            if time.monotonic() > deadline:
                raise SystemExit("the deck did not get there within 60 s")
            await pilot.pause(0.01)

    def shown(app: FerrumDeckApp, selector: str, text: str) -> bool:
        try:
            content = app.screen.query_one(selector, Static).content
        except NoMatches:  # the screen is still being built
            return False
        return text in str(content)

    def rows(app: FerrumDeckApp) -> int:
        try:
            return app.screen.query_one("#runs", DataTable).row_count
        except NoMatches:
            return 0

    app = FerrumDeckApp(AsyncFerrumDeck(url, key))
    async with app.run_test(size=SIZE) as pilot:
        mark("dashboard first paint")
        await until(pilot, lambda: shown(app, "#run-numbers", "throughput"))
        await until(pilot, lambda: shown(app, "#queue-numbers", "depth"))
        mark("dashboard data")
        await pilot.press("2")
        await until(pilot, lambda: rows(app) > 0)
        mark("runs screen, first page")
        table = app.screen.query_one("#runs", DataTable)
        while rows(app) < 2000:
            await pilot.press("ctrl+end")
            await until(pilot, lambda: table.row_count > table.cursor_row + 1 or rows(app) >= 2000)
        mark("2,000 runs loaded")
    return marks


async def bench(runs: int) -> None:
    database = f"fdbench_{uuid.uuid4().hex[:10]}"
    admin_conn = await asyncpg.connect(ADMIN_DSN)
    await admin_conn.execute(f'CREATE DATABASE "{database}"')
    dsn = ADMIN_DSN.rsplit("/", 1)[0] + f"/{database}"
    port = free_port()
    try:
        seeded = time.perf_counter()
        key = await _seed(dsn, runs)
        seed_seconds = time.perf_counter() - seeded
        env = {
            "FERRUMDECK_DATABASE_URL": dsn,
            "FERRUMDECK_REDIS_URL": REDIS_URL,
            "FERRUMDECK_STREAM_PREFIX": f"fdbench:{database}",
            "FERRUMDECK_PORT": str(port),
            "FERRUMDECK_LOG_LEVEL": "WARNING",
            "FERRUMDECK_AUDIT_KEY": AUDIT_KEY,
        }
        url = f"http://127.0.0.1:{port}"
        with tempfile.TemporaryDirectory(prefix="fdbench-") as home:
            async with serving(
                "gateway", env, Path(home) / "gateway.log", ready_url=f"{url}/readyz"
            ):
                child = await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-m",
                    "bench.tui_startup",
                    "--measure",
                    url,
                    key,
                    stdout=subprocess.PIPE,
                )
                out, _ = await child.communicate()
                marks = json.loads(out.decode().strip().splitlines()[-1])
    finally:
        await admin_conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        await admin_conn.close()

    print(
        f"deck startup over {runs} runs (seeded in {seed_seconds:.1f} s), "
        f"terminal {SIZE[0]}x{SIZE[1]}, nproc={os.cpu_count()}"
    )
    print(f"{'milestone':<28} {'s from start':>13} {'RSS MB':>8}")
    for name, (seconds, rss) in marks.items():
        print(f"{name:<28} {seconds:>13.2f} {rss:>8.1f}")


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--measure":
        print(json.dumps(asyncio.run(_measure(sys.argv[2], sys.argv[3]))))
        return
    asyncio.run(bench(int(sys.argv[1]) if len(sys.argv) > 1 else 10_000))


if __name__ == "__main__":
    main()
