"""`ferrumdeck dev` (what `make dev` runs): embedded servers, demo agent, clean stop."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest
from redis.asyncio import Redis

from services.devstack.demo_llm import DEMO_LABEL
from services.devstack.embedded import free_port
from testbed import servers

START_TIMEOUT = 90


class DevStack:
    def __init__(
        self,
        home: Path,
        port: int,
        log: Path,
        extra_env: dict[str, str] | None = None,
        *,
        piped: bool = False,
    ) -> None:
        """`piped`: stdout is a pipe this test reads, as `tee` would, instead of the log."""
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("FERRUMDECK_") and not k.endswith("_API_KEY")
        } | (extra_env or {})
        self.home = home
        self.log_path = log
        self._log = log.open("ab")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "services.cli.main",
                "dev",
                "--home",
                str(home),
                "--port",
                str(port),
            ],
            env=env,
            stdout=subprocess.PIPE if piped else self._log,
            stderr=subprocess.STDOUT,
        )

    def wait_ready(self) -> dict[str, str]:
        dev_env = self.home / "dev.env"
        deadline = time.monotonic() + START_TIMEOUT
        while not dev_env.exists():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"dev stack did not start:\n{self.log_path.read_text()}")
            time.sleep(0.2)
        pairs = (line.split("=", 1) for line in dev_env.read_text().splitlines())
        return dict(pairs)

    def descendants(self) -> list[psutil.Process]:
        return psutil.Process(self.process.pid).children(recursive=True)

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(30)
        finally:
            self._log.close()
        return code


@pytest.fixture
def dev_home(scratch: Path) -> Iterator[Path]:
    home = scratch / f"home-{uuid.uuid4().hex[:8]}"
    yield home
    for proc in psutil.process_iter(["cmdline"]):
        if str(home) in " ".join(proc.info["cmdline"] or []):
            proc.kill()


def _demo_run(env: dict[str, str], text: str) -> dict[str, object]:
    headers = {"Authorization": f"Bearer {env['FERRUMDECK_API_KEY']}"}
    with httpx.Client(base_url=env["FERRUMDECK_URL"], headers=headers, timeout=10) as api:
        created = api.post("/v1/runs", json={"agent": "demo", "input": text})
        assert created.status_code == 202, created.text
        run_id = created.json()["id"]
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            run: dict[str, object] = api.get(f"/v1/runs/{run_id}").json()
            if run["status"] not in ("queued", "running"):
                return run
            time.sleep(0.1)
    raise AssertionError(f"demo run {run_id} did not finish")


def test_dev_stack_runs_the_demo_offline_stops_cleanly_and_keeps_its_data(
    dev_home: Path, tmp_path: Path
) -> None:
    port = free_port()
    first = DevStack(dev_home, port, tmp_path / "dev.log")
    env = first.wait_ready()
    assert env["FERRUMDECK_URL"] == f"http://127.0.0.1:{port}"
    assert env["FERRUMDECK_API_KEY"].startswith("fd_")
    run = _demo_run(env, "Hello, deck!")
    assert run["status"] == "completed"
    assert run["output"] == f"{DEMO_LABEL} You said: Hello, deck!"
    children = first.descendants()
    assert len(children) >= 4, "gateway, worker, demo model and the embedded servers"
    assert first.stop() in (0, 143)
    _, alive = psutil.wait_procs(children, timeout=10)
    assert alive == [], f"left behind: {[p.cmdline() for p in alive]}"

    (dev_home / "dev.env").unlink()
    second = DevStack(dev_home, port, tmp_path / "dev.log")
    try:
        again = second.wait_ready()
        assert again["FERRUMDECK_API_KEY"] == env["FERRUMDECK_API_KEY"]
        headers = {"Authorization": f"Bearer {again['FERRUMDECK_API_KEY']}"}
        kept = httpx.get(f"{again['FERRUMDECK_URL']}/v1/runs/{run['id']}", headers=headers)
        assert kept.json()["output"] == run["output"]
        assert _demo_run(again, "still here?")["status"] == "completed"
    finally:
        second.stop()


def test_ctrl_c_stops_everything_after_the_pipe_it_printed_to_closed(
    dev_home: Path, tmp_path: Path
) -> None:
    """`make dev 2>&1 | tee log` and Ctrl-C: tee goes first, and the gateway, worker and
    demo model used to run on, orphaned, with the database gone."""
    stack = DevStack(dev_home, free_port(), tmp_path / "dev.log", piped=True)
    assert stack.process.stdout is not None
    try:
        stack.wait_ready()
        children = stack.descendants()
        stack.process.stdout.close()  # tee has gone
        stack.process.send_signal(signal.SIGINT)
        code = stack.process.wait(60)
    finally:
        stack._log.close()
    _, alive = psutil.wait_procs(children, timeout=10)
    assert alive == [], f"left behind: {[p.cmdline() for p in alive]}"
    assert code in (0, 130, -signal.SIGINT)


async def test_dev_stack_uses_the_servers_it_is_given(
    dev_home: Path, tmp_path: Path, empty_database: str, redis_url: str
) -> None:
    prefix = servers.unique_prefix()
    stack = DevStack(
        dev_home,
        free_port(),
        tmp_path / "dev.log",
        {
            "FERRUMDECK_DATABASE_URL": empty_database,
            "FERRUMDECK_REDIS_URL": redis_url,
            "FERRUMDECK_STREAM_PREFIX": prefix,
        },
    )
    try:
        env = await asyncio.to_thread(stack.wait_ready)
        run = await asyncio.to_thread(_demo_run, env, "external")
        assert run["status"] == "completed"
        redis = Redis.from_url(redis_url)
        try:
            assert await redis.exists(f"{prefix}:runs")
        finally:
            await redis.aclose()
        assert not (dev_home / "postgres").exists()
        assert not (dev_home / "valkey").exists()
        # `ferrumdeck config worker` shows what this stack's worker runs with.
        printed = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "services.cli.main", "config", "worker"],
            env={k: v for k, v in os.environ.items() if not k.startswith("FERRUMDECK_")}
            | {"FERRUMDECK_HOME": str(dev_home), "FERRUMDECK_ENV_FILE": ""},
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        shown = printed.stdout.splitlines()
        assert f"FERRUMDECK_REDIS_URL={redis_url}" in shown
        assert f"FERRUMDECK_STREAM_PREFIX={prefix}" in shown
        assert f"FERRUMDECK_URL={env['FERRUMDECK_URL']}" in shown
        assert any(line.startswith("FERRUMDECK_WORKER_ID=dev-") for line in shown)
    finally:
        await asyncio.to_thread(stack.stop)
        await servers.delete_prefix(redis_url, prefix)
