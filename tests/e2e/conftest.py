"""A real stack per test module: a hypercorn gateway and two worker processes."""

from __future__ import annotations

import json
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from services.devstack.embedded import free_port
from testbed import servers
from testbed.processes import Service, wait_until
from testbed.waiting import eventually
from tests.support.scripted_llm import ScriptedLLM

VAULT_PROJECT = "e2e-acme"
"""The only project the `vault` MCP server is offered to; the stack's admin is not in it."""


@dataclass
class Stack:
    url: str
    api: httpx.AsyncClient
    llm: ScriptedLLM
    prefix: str
    gateway: Service
    workers: list[Service]
    notes_file: Path
    vault_file: Path


def mcp_servers_file(directory: Path, notes_file: Path, vault_file: Path) -> Path:
    """Workers' MCP servers: the test notes server, shared and as `vault` limited to
    `VAULT_PROJECT`, and the third-party time server."""
    config = {
        "mcpServers": {
            "notes": {
                "command": sys.executable,
                "args": ["-m", "testbed.mcp_servers.notes_server"],
                "env": {"NOTES_FILE": str(notes_file)},
            },
            "vault": {
                "command": sys.executable,
                "args": ["-m", "testbed.mcp_servers.notes_server"],
                "env": {"NOTES_FILE": str(vault_file)},
                "projects": [VAULT_PROJECT],
            },
            "time": {"command": sys.executable, "args": ["-m", "mcp_server_time"]},
        }
    }
    path = directory / "mcp.json"
    path.write_text(json.dumps(config))
    return path


async def _tools_reported(api: httpx.AsyncClient, workers: set[str]) -> None:
    """Both workers connected to their MCP servers and told the gateway. A worker of
    another module that never withdrew its catalogue (an in-process one, on streams of
    its own) may still be listed beside them until its report expires: it takes no job
    of this stack, so it is not waited out."""

    async def catalogue() -> dict[str, set[str]]:
        items = (await api.get("/v1/tools")).json()["items"]
        return {t["name"]: set(t["workers"]) for t in items}

    await eventually(
        catalogue,
        lambda c: all(
            workers <= c.get(n, set()) for n in ("notes.write_note", "time.get_current_time")
        ),
        within=60,
    )


@pytest.fixture(scope="module")
async def stack(
    database_url: str,
    redis_url: str,
    models_file: Path,
    llm: ScriptedLLM,
    admin_key: str,
    worker_key: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Stack]:
    logs = tmp_path_factory.mktemp("e2e-logs")
    notes_file = logs / "notes.txt"
    vault_file = logs / "vault.txt"
    prefix = servers.unique_prefix()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    common = {
        "FERRUMDECK_REDIS_URL": redis_url,
        "FERRUMDECK_STREAM_PREFIX": prefix,
        "FERRUMDECK_MODELS": str(models_file),
    }
    gateway = Service(
        "gateway",
        {
            **common,
            "FERRUMDECK_DATABASE_URL": database_url,
            "FERRUMDECK_PORT": str(port),
            "FERRUMDECK_LEASE_SECONDS": "5",
            # The tests wait for each worker's tool listing, which names the workers.
            "FERRUMDECK_PLATFORM_VIEW": "true",
        },
        logs / "gateway.log",
    )
    workers = [
        Service(
            "worker",
            {
                **common,
                "FERRUMDECK_URL": url,
                "FERRUMDECK_WORKER_TOKEN": worker_key,
                "FERRUMDECK_WORKER_ID": f"e2e-worker-{n}",
                "FERRUMDECK_HEARTBEAT_SECONDS": "1",
                "FERRUMDECK_READ_BLOCK_MS": "200",
                "FERRUMDECK_RECLAIM_IDLE_SECONDS": "6",
                "FERRUMDECK_MCP_SERVERS": str(mcp_servers_file(logs, notes_file, vault_file)),
            },
            logs / f"worker-{n}.log",
        )
        for n in (1, 2)
    ]
    try:
        await wait_until(f"{url}/readyz", 30, gateway)
        async with httpx.AsyncClient(
            base_url=url, headers={"Authorization": f"Bearer {admin_key}"}, timeout=10
        ) as api:
            await _tools_reported(api, {"e2e-worker-1", "e2e-worker-2"})
            yield Stack(url, api, llm, prefix, gateway, workers, notes_file, vault_file)
    finally:
        for service in [*workers, gateway]:
            service.stop()
        await servers.delete_prefix(redis_url, prefix)
