"""`honcho start` with the repository's Procfile and an .env runs a working platform, and
stopping honcho leaves no process behind."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import httpx
import psutil

from services.devstack.demo_llm import Reply
from services.devstack.embedded import free_port
from testbed import servers
from testbed.waiting import eventually
from tests.support.scripted_llm import ScriptedLLM

PROCFILE = Path(__file__).resolve().parents[2] / "Procfile"


async def test_honcho_runs_the_platform_and_stops_cleanly(
    tmp_path: Path,
    database_url: str,
    redis_url: str,
    models_file: Path,
    llm: ScriptedLLM,
    admin_key: str,
    worker_key: str,
) -> None:
    prefix = servers.unique_prefix()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    shutil.copy(PROCFILE, tmp_path / "Procfile")
    (tmp_path / ".env").write_text(
        "\n".join(
            [
                f"FERRUMDECK_DATABASE_URL={database_url}",
                f"FERRUMDECK_REDIS_URL={redis_url}",
                f"FERRUMDECK_STREAM_PREFIX={prefix}",
                f"FERRUMDECK_MODELS={models_file}",
                f"FERRUMDECK_PORT={port}",
                f"FERRUMDECK_URL={url}",
                f"FERRUMDECK_WORKER_TOKEN={worker_key}",
                # The session's key: links this gateway makes in the shared database
                # must verify for every later test (tests/conftest.py).
                f"FERRUMDECK_AUDIT_KEY={os.environ['FERRUMDECK_AUDIT_KEY']}",
                "FERRUMDECK_READ_BLOCK_MS=200",
            ]
        )
    )
    venv_bin = str(Path(sys.executable).parent)
    env = {key: value for key, value in os.environ.items() if not key.startswith("FERRUMDECK_")} | {
        "PATH": f"{venv_bin}{os.pathsep}{os.environ['PATH']}",
        "PYTHONUNBUFFERED": "1",
    }
    log_path = tmp_path / "honcho.log"
    honcho = _start_honcho(tmp_path, env, log_path)
    try:
        async with httpx.AsyncClient(
            base_url=url, headers={"Authorization": f"Bearer {admin_key}"}, timeout=10
        ) as api:
            await eventually(lambda: _status(api, "/readyz"), lambda s: s == 200, within=60)
            name = f"honcho-{uuid.uuid4().hex[:8]}"
            created = await api.post("/v1/agents", json={"name": name, "model": "scripted"})
            assert created.status_code == 201, created.text
            prompt = f"via honcho {uuid.uuid4().hex[:8]}"
            llm.script(prompt, Reply(content="run by honcho"))
            started = await api.post("/v1/runs", json={"agent": name, "input": prompt})
            assert started.status_code == 202, started.text

            async def run() -> dict[str, Any]:
                body: dict[str, Any] = (await api.get(f"/v1/runs/{started.json()['id']}")).json()
                return body

            finished = await eventually(run, lambda r: r["status"] == "completed", within=60)
            assert finished["output"] == "run by honcho"
        children = psutil.Process(honcho.pid).children(recursive=True)
        assert len(children) >= 2, log_path.read_text()
        honcho.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(honcho.wait, 60)
        assert code in (0, -signal.SIGTERM, 128 + signal.SIGTERM), log_path.read_text()
        _gone, alive = psutil.wait_procs(children, timeout=10)
        assert alive == [], f"left behind: {alive}\n{log_path.read_text()}"
    finally:
        if honcho.poll() is None:
            honcho.kill()
            honcho.wait()
        await servers.delete_prefix(redis_url, prefix)


async def _status(api: httpx.AsyncClient, path: str) -> int:
    try:
        return (await api.get(path)).status_code
    except httpx.HTTPError:
        return 0


def _start_honcho(directory: Path, env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    with log_path.open("wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "honcho", "start", "-p", str(free_port())],
            cwd=directory,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
