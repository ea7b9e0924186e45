"""SIGTERM to a real worker process in the middle of a run: it hands the run back within
its drain deadline and exits 0, as systemd and honcho expect."""

from __future__ import annotations

import json
import signal
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from services.devstack.demo_llm import Reply
from services.gateway.settings import GatewaySettings
from testbed.processes import Service
from testbed.waiting import eventually
from tests.support.gateway_server import serve_gateway
from tests.support.scripted_llm import ScriptedLLM


@pytest.mark.slow
async def test_sigterm_hands_back_a_run_stuck_in_a_model_call_and_exits_0(
    settings: GatewaySettings,
    redis: Redis,
    llm: ScriptedLLM,
    admin_key: str,
    worker_key: str,
    models_file: Path,
    tmp_path: Path,
) -> None:
    prompt = f"think forever {uuid.uuid4().hex[:8]}"
    llm.script(prompt, Reply(content="never heard", delay_seconds=20))
    streams = settings.streams
    async with (
        serve_gateway(settings) as served,
        httpx.AsyncClient(
            base_url=served.url, headers={"Authorization": f"Bearer {admin_key}"}, timeout=10
        ) as api,
    ):
        worker = Service(
            "worker",
            {
                "FERRUMDECK_URL": served.url,
                "FERRUMDECK_WORKER_TOKEN": worker_key,
                "FERRUMDECK_WORKER_ID": "sigterm-worker",
                "FERRUMDECK_REDIS_URL": settings.redis_url,
                "FERRUMDECK_STREAM_PREFIX": settings.stream_prefix,
                "FERRUMDECK_MODELS": str(models_file),
                "FERRUMDECK_METRICS_PORT": "0",
                "FERRUMDECK_HEARTBEAT_SECONDS": "1",
                "FERRUMDECK_READ_BLOCK_MS": "200",
                "FERRUMDECK_DRAIN_SECONDS": "1",
            },
            tmp_path / "worker.log",
        )
        try:
            agent = f"agent-{uuid.uuid4().hex[:8]}"
            created = await api.post("/v1/agents", json={"name": agent, "model": "scripted"})
            assert created.status_code == 201, created.text
            response = await api.post("/v1/runs", json={"agent": agent, "input": prompt})
            run_id = response.json()["id"]

            async def calls() -> int:
                assert worker.process.poll() is None, worker.log()
                return llm.calls[prompt]

            await eventually(calls, lambda n: n == 1, within=60)  # LiteLLM imports slowly
            worker.process.send_signal(signal.SIGTERM)
            stopping = datetime.now(UTC)

            async def exit_code() -> int | None:
                return worker.process.poll()

            # Waited for here, not in Service.stop: the gateway answering the release
            # call runs in this event loop.
            # Unloading LiteLLM alone takes Python seconds on a busy machine.
            code = await eventually(exit_code, lambda c: c is not None, within=20)
        finally:
            worker.stop()

        assert code == 0, worker.log()
        (handed_back,) = [
            line for line in _log_lines(worker) if "runs handed back" in line["message"]
        ]
        assert f"1 runs handed back ({run_id})" in handed_back["message"]
        # 1 s of drain, then the release call.
        assert datetime.fromisoformat(handed_back["ts"]) - stopping < timedelta(seconds=3)
        run: dict[str, Any] = (await api.get(f"/v1/runs/{run_id}")).json()
        assert run["status"] == "queued"
        pending = await redis.xpending_range(
            streams.runs, streams.group, min="-", max="+", count=10
        )
        assert [p["consumer"] for p in pending] == [b"sigterm-worker"]


def _log_lines(service: Service) -> list[dict[str, Any]]:
    """The worker's JSON log lines (LiteLLM's own console output is not JSON)."""
    lines = []
    for text in service.log().splitlines():
        if text.startswith("{"):
            lines.append(json.loads(text))
    return lines
