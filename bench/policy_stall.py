"""Does a huge policy stall the gateway for everyone else? (issue 14, item 3)

A project admin may `PUT` 2,000 rules with long distinct regexes (about 0.8 MB, under
the body limit). Checking them compiles every regex, and so does the first evaluation
after it, when the gateway compiles the new version. Done on the event loop, every
other project's requests wait meanwhile. This starts a real gateway, sends
`GET /healthz` every 5 ms from one client while another `PUT`s such a policy and then
evaluates a call under it, and reports how late `/healthz` answered. The baseline row,
measured in the same run, is what the loop used to be blocked for: validating and
compiling the same policy on one thread. Target: `/healthz` delayed by no more than
50 ms.

Run: `.venv/bin/python -m bench.policy_stall`
"""

from __future__ import annotations

import asyncio
import os
import random
import string
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from bench.measure import table
from bench.stack import AUDIT_KEY, SEAL
from services.contract.api import Role
from services.contract.policy import PolicySet
from services.devstack.embedded import free_port
from services.gateway.audit import Actor
from services.gateway.db.connections import connect
from services.gateway.db.migrations import migrate
from services.gateway.policy import CompiledPolicy
from services.gateway.store.keys import create_key
from testbed.processes import serving

ADMIN_DSN = os.environ.get(
    "FERRUMDECK_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres"
)
REDIS_URL = os.environ.get("FERRUMDECK_BENCH_REDIS", "redis://127.0.0.1:6379/0")
RULES = 2000
SEED = 14


def _policy() -> dict[str, Any]:
    rng = random.Random(SEED)
    rules = []
    for n in range(RULES):
        words = ["".join(rng.choices(string.ascii_lowercase, k=10)) for _ in range(29)]
        rules.append(
            {
                "id": f"r{n}",
                "tool": "notes.*",
                "when": {"args": {"text": {"regex": "^(" + "|".join(words) + ")$"}}},
                "effect": "deny",
            }
        )
    return {"rules": rules}


async def _admin_key(dsn: str) -> str:
    conn = await connect(dsn, seal=SEAL)
    try:
        await migrate(conn)
        _, secret = await create_key(conn, "bench-admin", Role.ADMIN, "bench", Actor.system("b"))
    finally:
        await conn.close()
    return secret


async def _lateness(url: str, stop: asyncio.Event) -> list[float]:
    """Round trips of `GET /healthz`, one every 5 ms, until `stop`."""
    samples = []
    async with httpx.AsyncClient(base_url=url) as http:
        while not stop.is_set():
            started = time.perf_counter()
            await http.get("/healthz")
            samples.append(time.perf_counter() - started)
            await asyncio.sleep(0.005)
    return samples


async def _while(url: str, action: Any) -> tuple[float, list[float]]:
    stop = asyncio.Event()
    watcher = asyncio.create_task(_lateness(url, stop))
    await asyncio.sleep(0.2)
    started = time.perf_counter()
    await action()
    took = time.perf_counter() - started
    await asyncio.sleep(0.05)
    stop.set()
    return took, await watcher


async def bench() -> None:
    policy = _policy()
    started = time.perf_counter()
    CompiledPolicy(list(PolicySet.model_validate(policy).rules), 1)
    on_one_thread = time.perf_counter() - started

    database = f"fdbench_{uuid.uuid4().hex[:10]}"
    admin_conn = await asyncpg.connect(ADMIN_DSN)
    await admin_conn.execute(f'CREATE DATABASE "{database}"')
    dsn = ADMIN_DSN.rsplit("/", 1)[0] + f"/{database}"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        "FERRUMDECK_DATABASE_URL": dsn,
        "FERRUMDECK_REDIS_URL": REDIS_URL,
        "FERRUMDECK_STREAM_PREFIX": f"fdbench:{database}",
        "FERRUMDECK_PORT": str(port),
        "FERRUMDECK_LOG_LEVEL": "WARNING",
        "FERRUMDECK_AUDIT_KEY": AUDIT_KEY,
    }
    try:
        key = await _admin_key(dsn)
        with tempfile.TemporaryDirectory(prefix="fdbench-") as home:
            async with (
                serving("gateway", env, Path(home) / "gateway.log", ready_url=f"{url}/readyz"),
                httpx.AsyncClient(
                    base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=60
                ) as api,
            ):

                async def idle() -> None:
                    await asyncio.sleep(1.0)

                async def put() -> None:
                    response = await api.put("/v1/policies", json=policy)
                    assert response.status_code == 200, response.text

                async def evaluate() -> None:
                    call = {"agent": "a", "tool": "notes.add", "arguments": {"text": "x"}}
                    response = await api.post("/v1/policies/evaluate", json=call)
                    assert response.status_code == 200, response.text

                rows = []
                for label, action in [
                    ("idle (no other request)", idle),
                    (f"PUT /v1/policies, {RULES} regex rules", put),
                    ("first evaluation under it (compiles it)", evaluate),
                ]:
                    took, samples = await _while(url, action)
                    rows.append(
                        [
                            label,
                            f"{took * 1000:.0f}",
                            len(samples),
                            f"{sorted(samples)[len(samples) // 2] * 1000:.1f}",
                            f"{max(samples) * 1000:.1f}",
                        ]
                    )
    finally:
        await admin_conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        await admin_conn.close()

    size = len(str(policy)) / 1e6
    print(f"policy stall: {RULES} rules, {size:.2f} MB, nproc={os.cpu_count()}")
    print(
        f"baseline: validating and compiling it on one thread takes "
        f"{on_one_thread * 1000:.0f} ms (what the event loop used to be blocked for)"
    )
    print(table(["while", "action ms", "healthz n", "healthz p50 ms", "healthz max ms"], rows))


def main() -> None:
    asyncio.run(bench())


if __name__ == "__main__":
    main()
