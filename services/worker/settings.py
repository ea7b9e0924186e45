"""Worker settings (`FERRUMDECK_*`)."""

from __future__ import annotations

import os
import socket
from pathlib import Path

from pydantic import Field

from services.contract.settings import CommonSettings
from services.worker.retry import Backoff


def _default_worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class WorkerSettings(CommonSettings):
    url: str = Field(default="http://127.0.0.1:8700", description="The gateway's base URL.")
    worker_token: str = Field(default="", description="A worker key (role `worker`).")
    worker_id: str = Field(default_factory=_default_worker_id, min_length=1, max_length=200)
    max_in_flight: int = Field(default=256, ge=1, le=100_000)
    max_loop_lag_seconds: float = Field(
        default=0.01,
        gt=0,
        description="While the event loop runs later than this (CPU-bound), no new jobs are "
        "read, so other workers take them.",
    )
    heartbeat_seconds: float = Field(default=10.0, gt=0)
    llm_timeout_seconds: float = Field(default=120.0, gt=0)
    read_block_ms: int = Field(default=1000, ge=10)
    reclaim_idle_seconds: float = Field(
        default=60.0,
        gt=0,
        description="Entries unacknowledged this long (their worker died) are taken over; "
        "keep it above the gateway's lease.",
    )
    drain_seconds: float = Field(
        default=20.0,
        ge=0,
        description="On SIGTERM, how long runs in flight may take to finish before they are "
        "handed back to the gateway for another worker; keep it below the service "
        "manager's stop timeout.",
    )
    llm_retries: int = Field(
        default=3,
        ge=0,
        le=100,
        description="Retries of a model call that failed for a passing reason.",
    )
    tool_retries: int = Field(
        default=3,
        ge=0,
        le=100,
        description="Retries of an idempotent tool call whose transport failed (server "
        "unavailable, connection lost, timed out); other calls are never made twice.",
    )
    retry_base_seconds: float = Field(
        default=0.5, gt=0, description="The longest wait before the first retry; doubles after."
    )
    retry_max_seconds: float = Field(
        default=10.0,
        gt=0,
        description="The cap on any wait between retries, a provider's Retry-After included.",
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

    def backoff(self, retries: int) -> Backoff:
        """Model and tool calls share the waits; only how often they retry differs."""
        return Backoff(retries, self.retry_base_seconds, self.retry_max_seconds)
