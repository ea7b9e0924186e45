"""Issue 16, fair share, on a real gateway and one real worker: project A enqueued 2,000
runs, then project B one, and B's run started 26 s later, behind 1,901 of A's.

Counted in runs, not seconds, so the bound holds on a slow machine as on a fast one: B's
run must start before more than a few dispatch windows of A's runs start after it was
created (at the worker's 55-70 runs/s here, that is within the issue's 1 s; the time
itself is `bench/fairness.py`'s to measure).
The stack has its own database, so A's leftover backlog dies with it."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import httpx
import pytest

from services.contract.api import Role
from services.devstack.embedded import free_port
from services.gateway.audit import Actor
from services.gateway.db.connections import connect, create_pool
from services.gateway.db.migrations import migrate
from services.gateway.store.keys import create_key
from testbed import servers
from testbed.processes import Service, wait_until
from testbed.waiting import eventually
from tests.support.sealing import SEAL

FLOOD = 2000
CLIENTS = 32
WINDOW = 8
# B's job is at most a window behind in the stream, and the worker holds at most a
# window of jobs read but not claimed (`consumer._UNCLAIMED_AHEAD`); the rest is slack
# for A's runs claimed while B's own request was being written. Seen: 8-18. On the
# first-come-first-served stream it was 1,822 (B waited 28.6 s).
BOUND = 4 * WINDOW


@pytest.fixture(scope="module")
async def fair_stack(
    scratch: Path,
    redis_url: str,
    models_file: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[tuple[str, asyncpg.Pool]]:
    logs = tmp_path_factory.mktemp("fair-logs")
    prefix = servers.unique_prefix()
    async with (
        servers.postgres_admin_dsn(scratch) as admin_dsn,
        servers.throwaway_database(admin_dsn) as dsn,
    ):
        conn = await connect(dsn, seal=SEAL)
        try:
            await migrate(conn)
            _, worker_key = await create_key(
                conn, "fair-worker", Role.WORKER, None, Actor.system("tests")
            )
        finally:
            await conn.close()
        url = f"http://127.0.0.1:{free_port()}"
        common = {
            "FERRUMDECK_REDIS_URL": redis_url,
            "FERRUMDECK_STREAM_PREFIX": prefix,
            "FERRUMDECK_MODELS": str(models_file),
        }
        gateway = Service(
            "gateway",
            {
                **common,
                "FERRUMDECK_DATABASE_URL": dsn,
                "FERRUMDECK_PORT": url.rsplit(":", 1)[1],
                "FERRUMDECK_DISPATCH_WINDOW": str(WINDOW),
                "FERRUMDECK_MAX_QUEUE_LAG": str(10 * FLOOD),
            },
            logs / "gateway.log",
        )
        worker = Service(
            "worker",
            {
                **common,
                "FERRUMDECK_URL": url,
                "FERRUMDECK_WORKER_TOKEN": worker_key,
                "FERRUMDECK_WORKER_ID": "fair-worker",
            },
            logs / "worker.log",
        )
        pool = await create_pool(dsn, seal=SEAL)
        try:
            await wait_until(f"{url}/readyz", 30, gateway)
            yield url, pool
        finally:
            await pool.close()
            # Off the loop: the worker drains runs whose model is the scripted server in
            # this very process.
            for service in (worker, gateway):
                await asyncio.to_thread(service.stop)
            await servers.delete_prefix(redis_url, prefix)


@contextlib.asynccontextmanager
async def _project(url: str, pool: asyncpg.Pool, project: str) -> AsyncIterator[httpx.AsyncClient]:
    """An admin client of a new project with an agent `fair`."""
    async with pool.acquire() as conn:
        _, secret = await create_key(
            conn, f"{project}-admin", Role.ADMIN, project, Actor.system("tests")
        )
    async with httpx.AsyncClient(
        base_url=url, headers={"Authorization": f"Bearer {secret}"}, timeout=30
    ) as api:
        created = await api.post("/v1/agents", json={"name": "fair", "model": "scripted"})
        assert created.status_code == 201, created.text
        yield api


async def _flood(api: httpx.AsyncClient) -> None:
    async def client(n: int) -> None:
        for _ in range(n):
            started = await api.post("/v1/runs", json={"agent": "fair", "input": "flood"})
            assert started.status_code == 202, started.text

    await asyncio.gather(*(client(FLOOD // CLIENTS) for _ in range(CLIENTS)))


async def test_a_quiet_projects_run_starts_within_a_few_windows_of_a_2000_run_flood(
    fair_stack: tuple[str, asyncpg.Pool],
) -> None:
    url, pool = fair_stack
    a_project, b_project = f"flood-{uuid.uuid4().hex[:6]}", f"quiet-{uuid.uuid4().hex[:6]}"
    async with (
        _project(url, pool, a_project) as a,
        _project(url, pool, b_project) as b,
    ):
        await _flood(a)
        queued = await pool.fetchval(
            "SELECT count(*) FROM runs WHERE project = $1 AND status = 'queued'", a_project
        )
        assert queued > FLOOD // 2, "the worker kept up with the flood: nothing to be fair about"
        started = await b.post("/v1/runs", json={"agent": "fair", "input": "quiet"})
        assert started.status_code == 202, started.text
        run_id = started.json()["id"]

        async def b_run() -> asyncpg.Record:
            row: asyncpg.Record = await pool.fetchrow(
                "SELECT created_at, started_at FROM runs WHERE id = $1", uuid.UUID(run_id)
            )
            return row

        b_row = await eventually(b_run, lambda r: r["started_at"] is not None, within=120)
        ahead = await pool.fetchval(
            "SELECT count(*) FROM runs WHERE project = $1 AND started_at > $2 AND started_at < $3",
            a_project,
            b_row["created_at"],
            b_row["started_at"],
        )
        assert ahead <= BOUND, (
            f"{ahead} of A's runs started while B's waited "
            f"{(b_row['started_at'] - b_row['created_at']).total_seconds():.2f} s"
        )
