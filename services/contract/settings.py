"""Settings both planes read, from `FERRUMDECK_*` environment variables.

Each plane extends `CommonSettings` with its own; a bad value fails at start with
pydantic's message, which names the offending variable.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.contract.jobs import StreamNames


class CommonSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FERRUMDECK_", extra="ignore")

    redis_url: str = "redis://127.0.0.1:6379/0"
    stream_prefix: str = Field(default="ferrumdeck", pattern=r"^[A-Za-z0-9:_.-]{1,100}$")
    models: Path | None = Field(
        default=None,
        description="A file in LiteLLM's proxy `model_list` format naming the models on offer.",
    )
    log_level: str = "INFO"
    max_deliveries: int = Field(
        default=5,
        ge=1,
        description="A job delivered more often than this without finishing fails its run and "
        "moves to the dead-letter stream. Both planes read it: the worker to give up on the "
        "job, the gateway to check the worker's word against the stream's delivery count.",
    )

    @property
    def streams(self) -> StreamNames:
        return StreamNames(self.stream_prefix)
