"""A real gateway and worker for operating tests: JSON logs at DEBUG, the worker's probe
port open, a provider key in the models file, and no env file read from anywhere."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml

from services.devstack.embedded import free_port
from testbed import servers
from testbed.processes import Service, wait_until
from tests.support.scripted_llm import ScriptedLLM


@dataclass
class OpsStack:
    url: str
    worker_probes: str
    api: httpx.AsyncClient
    llm: ScriptedLLM
    gateway: Service
    worker: Service
    admin_key: str
    worker_key: str
    provider_key: str


def write_models(directory: Path, llm: ScriptedLLM, provider_key: str) -> Path:
    path = directory / "models.yaml"
    entry = {
        "model_name": "scripted",
        "litellm_params": {
            "model": "openai/scripted",
            "api_base": llm.base_url,  # type: ignore[attr-defined]
            "api_key": provider_key,
            "input_cost_per_token": 0.000002,
            "output_cost_per_token": 0.000004,
        },
    }
    path.write_text(yaml.safe_dump({"model_list": [entry]}))
    return path


@pytest.fixture(scope="module")
async def ops_stack(
    database_url: str,
    redis_url: str,
    llm: ScriptedLLM,
    admin_key: str,
    worker_key: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[OpsStack]:
    logs = tmp_path_factory.mktemp("ops-logs")
    provider_key = "sk-ops-" + secrets.token_hex(16)
    prefix = servers.unique_prefix()
    port, probes = free_port(), free_port()
    url = f"http://127.0.0.1:{port}"
    common = {
        "FERRUMDECK_ENV_FILE": "",
        "FERRUMDECK_LOG_LEVEL": "DEBUG",
        "FERRUMDECK_REDIS_URL": redis_url,
        "FERRUMDECK_STREAM_PREFIX": prefix,
        "FERRUMDECK_MODELS": str(write_models(logs, llm, provider_key)),
    }
    gateway = Service(
        "gateway",
        {**common, "FERRUMDECK_DATABASE_URL": database_url, "FERRUMDECK_PORT": str(port)},
        logs / "gateway.log",
    )
    worker = Service(
        "worker",
        {
            **common,
            "FERRUMDECK_URL": url,
            "FERRUMDECK_WORKER_TOKEN": worker_key,
            "FERRUMDECK_WORKER_ID": "ops-worker",
            "FERRUMDECK_READ_BLOCK_MS": "200",
            "FERRUMDECK_METRICS_PORT": str(probes),
        },
        logs / "worker.log",
    )
    try:
        await wait_until(f"{url}/readyz", 30, gateway)
        await wait_until(f"http://127.0.0.1:{probes}/readyz", 60, worker)
        async with httpx.AsyncClient(
            base_url=url, headers={"Authorization": f"Bearer {admin_key}"}, timeout=10
        ) as api:
            yield OpsStack(
                url,
                f"http://127.0.0.1:{probes}",
                api,
                llm,
                gateway,
                worker,
                admin_key,
                worker_key,
                provider_key,
            )
    finally:
        for service in (worker, gateway):
            service.stop()
        await servers.delete_prefix(redis_url, prefix)
