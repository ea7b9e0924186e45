"""The worker's log is JSON throughout: a stdio MCP server's stderr comes through as the
worker's own records (not as raw lines between them), and the MCP SDK's HTTP client does
not log every request at INFO."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
from collections.abc import Iterator

import httpx2._client
import pytest

from services.telemetry import logs
from services.worker.mcp_config import StdioServer
from services.worker.mcp_router import McpRouter
from testbed.waiting import eventually

# mcp-server-time, with a line of its own on stderr first.
CHATTY_TIME = StdioServer(
    command=sys.executable,
    args=[
        "-c",
        "import sys; print('time server warming up', file=sys.stderr, flush=True); "
        "from mcp_server_time import main; sys.argv[1:] = ['--local-timezone', 'UTC']; main()",
    ],
)


async def test_a_stdio_servers_stderr_becomes_worker_log_records(
    capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    router = McpRouter({"time": CHATTY_TIME})
    await router.start()
    try:
        failed = await router.call("time.get_current_time", {"timezone": "Nowhere/Bad"})
        assert not failed.ok

        async def relayed() -> list[str]:
            await asyncio.sleep(0)
            return [
                r.getMessage() for r in caplog.records if r.name == "services.worker.server_stderr"
            ]

        lines = await eventually(
            relayed, lambda found: any("Nowhere/Bad" in line for line in found)
        )
    finally:
        await router.aclose()
    assert "MCP server 'time': time server warming up" in lines
    assert "warming up" not in capfd.readouterr().err


@pytest.fixture
def worker_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    levels = {name: logging.getLogger(name).level for name in logs.CHATTY_LOGGERS}
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    for name, old in levels.items():
        logging.getLogger(name).setLevel(old)


@pytest.mark.usefixtures("worker_logging")
def test_the_mcp_http_clients_request_lines_are_quieted() -> None:
    logs.configure_logging("INFO", "worker")
    # The logger the streamable HTTP transport's client really logs its requests with.
    assert not httpx2._client.logger.isEnabledFor(logging.INFO)
    assert httpx2._client.logger.isEnabledFor(logging.WARNING)


def test_the_worker_reads_litellms_price_map_locally_whatever_imports_it_first() -> None:
    """A worker module importing litellm before `llm.py` made each start fetch the map
    from GitHub (three tries offline) and print LiteLLM's warnings, not JSON."""
    script = (
        "import os\n"
        "import services.worker.conversation\n"
        "import litellm\n"
        "print(os.environ['LITELLM_LOCAL_MODEL_COST_MAP'], len(litellm.model_cost) > 100)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "LITELLM_LOCAL_MODEL_COST_MAP"}
    result = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.stdout.split() == ["True", "True"], result.stderr
    assert "LiteLLM" not in result.stderr
