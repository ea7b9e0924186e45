"""The first hour of an integrator (issue 19), walked as the README tells a newcomer: a
dev stack, its worker given `mcp-server-time` over stdio, the first policy, a run that
calls a time tool streamed by `--follow` and approved by the CLI, one approved by the
API, a tool error, the Python client waiting for a run, and `config worker` telling what
the stack's worker runs with.

The commands run from the directory holding `.ferrumdeck/`, as from a checkout after
`make dev`, with no `--url`, `--key` or environment of their own."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from services.client import AsyncFerrumDeck
from services.contract.runs import RunStatus
from services.devstack.demo_llm import DEMO_LABEL
from services.devstack.embedded import free_port
from tests.e2e.test_dev_stack import DevStack

REPO = Path(__file__).resolve().parents[2]
COMMAND = [sys.executable, "-m", "services.cli.main"]
PARIS = 'time.get_current_time {"timezone": "Europe/Paris"}'


@pytest.fixture
def checkout(scratch: Path) -> Iterator[Path]:
    """Where a newcomer types: the dev stack's home is its `.ferrumdeck/`."""
    yield scratch
    for proc in psutil.process_iter(["cmdline"]):
        if str(scratch) in " ".join(proc.info["cmdline"] or []):
            proc.kill()


def _env() -> dict[str, str]:
    return {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("FERRUMDECK_") and not k.endswith("_API_KEY")
    } | {"FERRUMDECK_ENV_FILE": ""}


def _cli(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*COMMAND, *args], cwd=cwd, env=_env(), capture_output=True, text=True, timeout=60
    )


async def _lines_until(stream: asyncio.StreamReader, wanted: str, seen: list[str]) -> None:
    while not any(wanted in line for line in seen):
        line = await asyncio.wait_for(stream.readline(), timeout=60)
        assert line, "".join(seen)
        seen.append(line.decode())


async def test_clone_to_an_approved_tool_call_as_the_readme_says(
    checkout: Path, tmp_path: Path
) -> None:
    stack = DevStack(checkout / ".ferrumdeck", free_port(), tmp_path / "dev.log")
    try:
        env = await asyncio.to_thread(stack.wait_ready)
        await _approved_by_the_cli(checkout)
        await _approved_by_the_api_and_waited_for(env)
        await _listed_and_configured(checkout, env)
    finally:
        await asyncio.to_thread(stack.stop)
    log = (tmp_path / "dev.log").read_text()
    worker_lines = [line.split("| ", 1)[1] for line in log.splitlines() if " worker   | " in line]
    assert worker_lines
    for line in worker_lines:  # the time server's own stderr included
        json.loads(line)


async def _approved_by_the_cli(checkout: Path) -> None:
    policy = await asyncio.to_thread(
        _cli, checkout, "policies", "apply", "-f", str(REPO / "docs/examples/first-policy.yaml")
    )
    assert policy.returncode == 0, policy.stderr

    # A run streamed by --follow, approved from another terminal with the printed command.
    follow = await asyncio.create_subprocess_exec(
        *COMMAND, "runs", "create", "demo", "--input", PARIS, "--follow",
        cwd=checkout, env=_env(),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert follow.stdout is not None
    out: list[str] = []
    try:
        await _lines_until(follow.stdout, "approve:", out)
        (command,) = [line for line in out if "approve:" in line]
        approval_id = command.split("approvals approve ")[1].split()[0]
        approved = await asyncio.to_thread(
            _cli, checkout, "approvals", "approve", approval_id, "--reason", "first try"
        )
        assert approved.returncode == 0, approved.stderr
        rest, errors = await asyncio.wait_for(follow.communicate(), timeout=60)
    finally:
        if follow.returncode is None:
            follow.kill()
            await follow.wait()
    text = "".join(out) + rest.decode()
    assert follow.returncode == 0, text + errors.decode()
    assert "tool_call waiting_approval time.get_current_time" in text
    assert "tool_call completed        time.get_current_time" in text
    assert f"output    {DEMO_LABEL} time.get_current_time said:" in text
    assert "Europe/Paris" in text.rsplit("output", 1)[1]


async def _approved_by_the_api_and_waited_for(env: dict[str, str]) -> None:
    headers = {"Authorization": f"Bearer {env['FERRUMDECK_API_KEY']}"}
    async with (
        httpx.AsyncClient(base_url=env["FERRUMDECK_URL"], headers=headers, timeout=10) as api,
        AsyncFerrumDeck(env["FERRUMDECK_URL"], env["FERRUMDECK_API_KEY"]) as deck,
    ):
        # Approved by the API; the client waits for it without missing its end.
        run = await deck.create_run("demo", 'time.get_current_time {"timezone": "Asia/Tokyo"}')
        async with asyncio.timeout(60):
            async for seen in deck.follow(run.id):
                if seen.status is RunStatus.WAITING_APPROVAL:
                    break
        (pending,) = (await deck.approvals(run_id=run.id, status="pending")).items
        decided = await api.post(f"/v1/approvals/{pending.id}/approve", json={"reason": "ok"})
        assert decided.status_code == 200, decided.text
        async with asyncio.timeout(60):
            done = await deck.wait(run.id)
        assert done.status is RunStatus.COMPLETED
        assert "Asia/Tokyo" in (done.output or "")

        # A tool error reaches the model as an error, and the run still completes.
        bad = await deck.create_run("demo", 'time.get_current_time {"timezone": "Nowhere/Bad"}')
        async with asyncio.timeout(60):
            async for seen in deck.follow(bad.id):
                if seen.status is RunStatus.WAITING_APPROVAL:
                    break
        (pending,) = (await deck.approvals(run_id=bad.id, status="pending")).items
        await deck.approve(pending.id, "see what happens")
        async with asyncio.timeout(60):
            failed_call = await deck.wait(bad.id)
        steps = (await deck.steps(bad.id)).items
        assert [(s.kind, s.status) for s in steps][1] == ("tool_call", "failed")
        assert "Nowhere/Bad" in (steps[1].error or "")
        assert failed_call.status is RunStatus.COMPLETED
        assert "error:" in (failed_call.output or "")

        # A plain question is answered at once, and a fast run is not missed.
        hello = await deck.create_run("demo", "Hello!")
        async with asyncio.timeout(60):
            answered = await deck.wait(hello.id)
        assert answered.output == f"{DEMO_LABEL} You said: Hello!"


async def _listed_and_configured(checkout: Path, env: dict[str, str]) -> None:
    listed = await asyncio.to_thread(_cli, checkout, "runs", "list", "--limit", "2")
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.splitlines()[-1].startswith("(more runs: --cursor ")

    shown = (await asyncio.to_thread(_cli, checkout, "config", "worker")).stdout.splitlines()
    assert f"FERRUMDECK_URL={env['FERRUMDECK_URL']}" in shown
    assert any(line.startswith("FERRUMDECK_WORKER_ID=dev-") for line in shown)
    assert any(line.endswith("mcp.json") for line in shown if "MCP_SERVERS" in line)
