"""Where the client finds the gateway and its key: arguments, then the environment, then
the `.ferrumdeck/dev.env` that `ferrumdeck dev` writes, so a developer who just started
the stack needs no flags at all."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from services.client.errors import ConfigError

DEFAULT_URL = "http://127.0.0.1:8700"
DEV_ENV = Path(".ferrumdeck") / "dev.env"


@dataclass(frozen=True)
class ClientConfig:
    url: str
    api_key: str


def _read_dev_env(path: Path) -> dict[str, str]:
    if not path.is_file():
        return {}
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)
    return {k.strip(): v.strip() for k, v in pairs}


def discover(
    url: str | None = None, api_key: str | None = None, *, cwd: Path | None = None
) -> ClientConfig:
    """Explicit values win, then `FERRUMDECK_URL` / `FERRUMDECK_API_KEY`, then dev.env."""
    dev = _read_dev_env((cwd or Path.cwd()) / DEV_ENV)
    found_url = url or os.environ.get("FERRUMDECK_URL") or dev.get("FERRUMDECK_URL")
    found_key = api_key or os.environ.get("FERRUMDECK_API_KEY") or dev.get("FERRUMDECK_API_KEY")
    if not found_key:
        raise ConfigError(
            "no API key: pass --key, set FERRUMDECK_API_KEY, or run `ferrumdeck dev` here "
            f"(it writes {DEV_ENV})"
        )
    return ClientConfig(url=(found_url or DEFAULT_URL).rstrip("/"), api_key=found_key)
