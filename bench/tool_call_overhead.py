"""What the platform adds to a tool call, next to the bare MCP call in the same run.

A tool call in a run costs: the policy authorisation round trip to the gateway (policy
evaluated and the step recorded in one transaction), the MCP call itself, and the step
report round trip. This script times each part against a real gateway process, real
PostgreSQL and a real MCP server (the third-party `mcp-server-time` over stdio), calls
interleaved so both series see the same machine conditions.

Needs PostgreSQL and Redis: `FERRUMDECK_BENCH_POSTGRES` (an admin DSN, default the local
server) and `FERRUMDECK_BENCH_REDIS`. It makes a throw-away database and drops it.

Run: `.venv/bin/python -m bench.tool_call_overhead [calls]`
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from bench.stack import AUDIT_KEY, SEAL
from services.contract.api import AgentCreate, Role
from services.contract.policy import PolicySet
from services.contract.runs import Budget, StepKind, StepStatus
from services.contract.worker_api import CatalogueReport, StepReport, ToolAuthorization
from services.devstack.embedded import free_port
from services.gateway.audit import Actor
from services.gateway.db.connections import connect
from services.gateway.db.migrations import migrate
from services.gateway.store.agents import create_version
from services.gateway.store.keys import create_key
from services.gateway.store.policies import put_policy
from services.worker.gateway_client import GatewayClient
from services.worker.mcp_config import StdioServer
from services.worker.mcp_router import McpRouter
from testbed.processes import serving

ADMIN_DSN = os.environ.get(
    "FERRUMDECK_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres"
)
REDIS_URL = os.environ.get("FERRUMDECK_BENCH_REDIS", "redis://127.0.0.1:6379/0")
TOOL = "time.get_current_time"
PROJECT = "bench"
BENCH = Actor.system("bench")
ARGS = {"timezone": "Europe/Oslo"}


def _ms(samples: list[float], q: float) -> float:
    return statistics.quantiles(samples, n=100, method="inclusive")[int(q) - 1] * 1000


async def _timed(samples: list[float], action: Callable[[], Awaitable[Any]]) -> Any:
    started = time.perf_counter()
    result = await action()
    samples.append(time.perf_counter() - started)
    return result


async def _prepare(dsn: str) -> tuple[str, str]:
    conn = await connect(dsn, seal=SEAL)
    try:
        await migrate(conn)
        _, admin = await create_key(conn, "bench-admin", Role.ADMIN, PROJECT, BENCH)
        _, worker = await create_key(conn, "bench-worker", Role.WORKER, None, BENCH)
        await create_version(
            conn,
            PROJECT,
            AgentCreate(
                name="bench", model="openai/x", tools=["time.*"], budget=Budget(max_steps=1000)
            ),
            BENCH,
        )
        await put_policy(
            conn,
            PROJECT,
            PolicySet.model_validate({"rules": [{"id": "t", "tool": "time.*", "effect": "allow"}]}),
            BENCH,
        )
    finally:
        await conn.close()
    return admin, worker


async def bench(calls: int) -> None:
    database = f"fdbench_{uuid.uuid4().hex[:10]}"
    admin_conn = await asyncpg.connect(ADMIN_DSN)
    await admin_conn.execute(f'CREATE DATABASE "{database}"')
    dsn = ADMIN_DSN.rsplit("/", 1)[0] + f"/{database}"
    port = free_port()
    stack = contextlib.AsyncExitStack()
    home = tempfile.TemporaryDirectory(prefix="fdbench-")
    router = McpRouter(
        {"time": StdioServer(command=sys.executable, args=["-m", "mcp_server_time"])}
    )
    try:
        admin_key, worker_key = await _prepare(dsn)
        env = {
            "FERRUMDECK_DATABASE_URL": dsn,
            "FERRUMDECK_REDIS_URL": REDIS_URL,
            "FERRUMDECK_STREAM_PREFIX": f"fdbench:{database}",
            "FERRUMDECK_PORT": str(port),
            "FERRUMDECK_LOG_LEVEL": "WARNING",
            "FERRUMDECK_AUDIT_KEY": AUDIT_KEY,
            # The agent's model is never called here, only claimed under.
            "FERRUMDECK_PROVIDER_MODELS": "openai",
        }
        url = f"http://127.0.0.1:{port}"
        await stack.enter_async_context(
            serving("gateway", env, Path(home.name) / "gateway.log", ready_url=f"{url}/readyz")
        )
        async with httpx.AsyncClient(
            base_url=url, headers={"Authorization": f"Bearer {admin_key}"}
        ) as api:
            run_id = uuid.UUID(
                (await api.post("/v1/runs", json={"agent": "bench", "input": "x"})).json()["id"]
            )
        gateway = GatewayClient(url, worker_key)
        await router.start()
        # The gateway authorises only tools the lease holder listed, as a worker does.
        await gateway.report_tools(
            CatalogueReport(worker_id="bench-worker", tools=router.catalogue())
        )
        grant = await gateway.claim(run_id, "bench-worker")
        bare: list[float] = []
        authorize: list[float] = []
        report: list[float] = []
        full: list[float] = []
        for seq in range(1, calls + 1):
            await _timed(bare, partial(router.call, TOOL, ARGS))
            started = time.perf_counter()
            ask = ToolAuthorization(
                epoch=grant.epoch,
                lease_token=grant.lease_token,
                seq=seq,
                tool=TOOL,
                tool_call_id=f"c{seq}",
                arguments=ARGS,
            )
            await _timed(authorize, partial(gateway.authorize_tool, run_id, ask))
            outcome = await router.call(TOOL, ARGS)
            step = StepReport(
                epoch=grant.epoch,
                lease_token=grant.lease_token,
                seq=seq,
                kind=StepKind.TOOL_CALL,
                status=StepStatus.COMPLETED,
                tool=TOOL,
                output=outcome.content,
                started_at=datetime.now(UTC),
                finished_at=datetime.now(UTC),
            )
            await _timed(report, partial(gateway.report_step, run_id, step))
            full.append(time.perf_counter() - started)
        await gateway.aclose()
    finally:
        await router.aclose()
        await stack.aclose()
        home.cleanup()
        await admin_conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        await admin_conn.close()

    overhead = [f - b for f, b in zip(full, bare, strict=True)]
    print(f"tool call overhead, {calls} calls, nproc={os.cpu_count()}")
    print(f"{'series':<46} {'median ms':>10} {'p99 ms':>10}")
    for label, samples in [
        ("baseline: bare MCP call (stdio, mcp-server-time)", bare),
        ("authorize round trip (policy + step insert)", authorize),
        ("step report round trip", report),
        ("tool step as a run makes it", full),
        ("added by the platform (step - bare)", overhead),
    ]:
        print(f"{label:<46} {_ms(samples, 50):>10.2f} {_ms(samples, 99):>10.2f}")


def main() -> None:
    asyncio.run(bench(int(sys.argv[1]) if len(sys.argv) > 1 else 500))


if __name__ == "__main__":
    main()
