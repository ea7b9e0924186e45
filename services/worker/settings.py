"""Worker settings (`FERRUMDECK_*`)."""

from __future__ import annotations

import os
import socket
from pathlib import Path

from pydantic import Field

from services.contract.settings import CommonSettings


def _default_worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class WorkerSettings(CommonSettings):
    url: str = Field(default="http://127.0.0.1:8700", description="The gateway's base URL.")
    worker_token: str = Field(default="", description="A worker key (role `worker`).")
    worker_id: str = Field(default_factory=_default_worker_id, min_length=1, max_length=200)
    max_in_flight: int = Field(default=256, ge=1, le=100_000)
    heartbeat_seconds: float = Field(default=10.0, gt=0)
    llm_timeout_seconds: float = Field(default=120.0, gt=0)
    read_block_ms: int = Field(default=1000, ge=10)
    reclaim_idle_seconds: float = Field(
        default=60.0,
        gt=0,
        description="Entries unacknowledged this long (their worker died) are taken over; "
        "keep it above the gateway's lease.",
    )
    mcp_servers: Path | None = Field(
        default=None,
        description="A JSON file shaped like the `mcpServers` object of common MCP clients.",
    )
    tool_timeout_seconds: float = Field(default=60.0, gt=0)
    max_tool_result_chars: int = Field(default=100_000, ge=100)
    metrics_host: str = Field(
        default="127.0.0.1", description="Where `/metrics`, `/healthz` and `/readyz` listen."
    )
    metrics_port: int = Field(
        default=9700, ge=0, le=65535, description="Their port; 0 serves none of them."
    )
