"""Connections to PostgreSQL, pooled or single, with JSON columns decoded to Python values,
and telling "the database is away" apart from "this query is wrong".
"""

from __future__ import annotations

import json
import re

import asyncpg

from services.contract.audit_mac import EventSeal

# A server that drops packets would otherwise hold each request for asyncpg's default 60 s.
CONNECT_TIMEOUT_SECONDS = 5.0

_UNREACHABLE = (
    # Refused, reset, unreachable, or timed out (TimeoutError is an OSError, and so is a
    # pool acquire that timed out). In the gateway only asyncpg meets raw socket errors:
    # redis-py wraps its own in RedisError.
    OSError,
    asyncpg.PostgresConnectionError,  # SQLSTATE class 08, and a connection lost mid-query
    asyncpg.CannotConnectNowError,  # starting up, shutting down, in recovery
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    asyncpg.TooManyConnectionsError,
)
_CLOSED = re.compile(r"\bclos(ed|ing)\b")


def unreachable(exc: BaseException) -> bool:
    """Whether `exc` says PostgreSQL cannot be reached now, so retrying later will do.

    A closed connection or pool shows as asyncpg's `InterfaceError`, which otherwise means
    misuse (a bug), hence the look at its message.
    """
    if isinstance(exc, _UNREACHABLE):
        return True
    return isinstance(exc, asyncpg.InterfaceError) and _CLOSED.search(str(exc)) is not None


class AuditedConnection(asyncpg.Connection):  # type: ignore[misc]
    """A connection that carries the seal its audit events are appended under.

    Every statement that appends an event runs on a connection from the gateway's pool
    (or a command's own), so the pool is what holds the key: no store function has to be
    handed it, and a connection opened without one refuses to append rather than write
    an event every verifier would report as forged."""

    seal: EventSeal | None = None


async def _init_connection(conn: asyncpg.Connection) -> None:
    for type_name in ("json", "jsonb"):
        await conn.set_type_codec(
            type_name, encoder=json.dumps, decoder=json.loads, schema="pg_catalog"
        )


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Nothing to reset: the gateway sets no session state on pooled connections (no
    SET, LISTEN or session advisory lock; LISTEN has its own connection). asyncpg's
    default reset is one more round trip (`RESET ALL`, `UNLISTEN *`, …) on every
    release, ~10 % of the gateway's CPU under load. An open transaction is still
    rolled back by asyncpg before this runs."""


async def create_pool(
    dsn: str, *, seal: EventSeal | None = None, min_size: int = 2, max_size: int = 10
) -> asyncpg.Pool:
    """A pool that replaces connections the server dropped on their next use, so a
    gateway outlives a database restart without restarting itself; its connections
    append audit events under `seal`."""

    async def init(conn: asyncpg.Connection) -> None:
        await _init_connection(conn)
        if isinstance(conn, AuditedConnection):
            conn.seal = seal

    pool = await asyncpg.create_pool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        connection_class=AuditedConnection,
        init=init,
        reset=_keep_session,
        timeout=CONNECT_TIMEOUT_SECONDS,
    )
    assert pool is not None
    return pool


async def connect(dsn: str, *, seal: EventSeal | None = None) -> asyncpg.Connection:
    """One connection, for command-line tools that do a few statements and exit; with
    `seal` when they append audit events."""
    conn = await asyncpg.connect(dsn, connection_class=AuditedConnection)
    await _init_connection(conn)
    conn.seal = seal
    return conn
