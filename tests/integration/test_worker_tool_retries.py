"""Tool calls against a real MCP server that dies: made again when that is safe (the tool
is idempotent and only the way to it failed), never otherwise."""

from __future__ import annotations

import re
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import psutil
import pytest
from prometheus_client import REGISTRY

from services.worker.mcp_config import StdioServer
from services.worker.mcp_router import McpRouter
from services.worker.retry import Backoff
from services.worker.tool_retries import call_tool

REPO = Path(__file__).resolve().parents[2]
# Waits of 0.5, 1, then 2 s six times: room for a killed stdio server to start again on a
# busy machine.
PATIENT = Backoff(8, 0.5, 2.0, jitter=lambda: 1.0)


def retries() -> float:
    return REGISTRY.get_sample_value("ferrumdeck_worker_retries_total", {"kind": "tool"}) or 0.0


@pytest.fixture
def notes_file(tmp_path: Path) -> Path:
    return tmp_path / "notes.txt"


@pytest.fixture
async def router(notes_file: Path) -> AsyncIterator[McpRouter]:
    server = StdioServer(
        command=sys.executable,
        args=["-m", "testbed.mcp_servers.notes_server"],
        env={"NOTES_FILE": str(notes_file)},
        cwd=REPO,
    )
    router = McpRouter({"notes": server}, call_timeout_seconds=0.5)
    await router.start()
    yield router
    await router.aclose()


def kill_notes_server() -> None:
    (victim,) = (
        child
        for child in psutil.Process().children(recursive=True)
        if "testbed.mcp_servers.notes_server" in child.cmdline()
    )
    victim.kill()
    victim.wait(5)


async def test_an_idempotent_call_gets_its_answer_while_its_server_restarts(
    router: McpRouter,
) -> None:
    kill_notes_server()
    before = retries()
    outcome = await call_tool(
        router, "notes.add", {"a": 2, "b": 3}, idempotent=True, backoff=PATIENT, deadline=None
    )
    assert (outcome.ok, outcome.content) == (True, "5")
    assert retries() > before


async def test_a_call_that_is_not_idempotent_is_made_at_most_once(router: McpRouter) -> None:
    kill_notes_server()
    before = retries()
    started = time.monotonic()
    outcome = await call_tool(
        router,
        "notes.write_note",
        {"text": "once"},
        idempotent=False,
        backoff=PATIENT,
        deadline=None,
    )
    assert outcome.ok is False
    assert outcome.content.startswith("MCP server 'notes' is unavailable")
    assert time.monotonic() - started < 0.5
    assert retries() == before


async def test_a_timed_out_idempotent_call_is_made_again(router: McpRouter) -> None:
    # `slow` is no idempotent tool; calling it as one shows what a timeout leads to.
    before = retries()
    started = time.monotonic()
    outcome = await call_tool(
        router,
        "notes.slow",
        {"seconds": 5},
        idempotent=True,
        backoff=Backoff(1, 0.01, 0.01),
        deadline=None,
    )
    assert outcome.ok is False
    # The error says the call was made twice, and over how long.
    assert re.fullmatch(
        r"tool 'notes.slow' timed out after 0.5s \(after 2 attempts, \d+s\)", outcome.content
    ), outcome.content
    assert time.monotonic() - started >= 1.0  # two attempts of 0.5 s
    assert retries() == before + 1


async def test_a_tools_own_error_is_its_answer_and_not_retried(router: McpRouter) -> None:
    before = retries()
    outcome = await call_tool(
        router,
        "notes.fail",
        {"message": "no such note"},
        idempotent=True,
        backoff=PATIENT,
        deadline=None,
    )
    assert (outcome.ok, outcome.content) == (False, "Error executing tool fail: no such note")
    assert retries() == before


async def test_no_retry_waits_past_the_runs_time_budget(router: McpRouter) -> None:
    kill_notes_server()
    started = time.monotonic()
    outcome = await call_tool(
        router,
        "notes.add",
        {"a": 1, "b": 1},
        idempotent=True,
        backoff=PATIENT,
        deadline=time.monotonic() + 0.3,  # less than the first wait
    )
    assert outcome.ok is False
    assert time.monotonic() - started < 0.3


async def test_a_timed_out_call_that_is_not_idempotent_is_not_made_again(
    router: McpRouter,
) -> None:
    before = retries()
    started = time.monotonic()
    outcome = await call_tool(
        router, "notes.slow", {"seconds": 5}, idempotent=False, backoff=PATIENT, deadline=None
    )
    assert (outcome.ok, outcome.transient) == (False, True)
    assert time.monotonic() - started < 1.0  # one attempt of 0.5 s: it may still be running
    assert retries() == before
