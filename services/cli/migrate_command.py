"""`ferrumdeck migrate [--app-role NAME]`: bring the schema up to date as its owner and,
when asked, make the least-privileged role the gateway connects as
(`services.gateway.db.app_role`).

The database is found like every administrative command's (`--database-url`, else
`FERRUMDECK_DATABASE_URL`, else the dev stack's, else the default); a database that
cannot be reached or a role that cannot be granted is one line on stderr and exit 2.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from typing import Any
from urllib.parse import urlsplit, urlunsplit


def register(commands: Any) -> None:
    migrate = commands.add_parser("migrate", help="apply database migrations")
    migrate.add_argument("--database-url", help="the owner's DSN (else as every command finds it)")
    migrate.add_argument(
        "--app-role",
        metavar="NAME",
        help="create (if need be) and grant the role the gateway connects as: all rows, but "
        "the audit trail's only SELECT and INSERT; password from FERRUMDECK_APP_ROLE_PASSWORD",
    )
    migrate.set_defaults(func=_migrate)


def _without_password(dsn: str) -> str:
    parts = urlsplit(dsn)
    user, _, host = parts.netloc.rpartition("@")
    name = user.partition(":")[0]
    return urlunsplit(parts._replace(netloc=f"{name}@{host}" if user else host))


def _migrate(args: argparse.Namespace) -> int:
    import asyncpg

    from services.cli.database import database_url
    from services.gateway.db.app_role import AppRoleError, grant_app_role
    from services.gateway.db.connections import connect
    from services.gateway.db.migrations import latest_version, migrate

    dsn = args.database_url or database_url()

    async def run() -> None:
        conn = await connect(dsn)
        try:
            applied = await migrate(conn)
            for migration in applied:
                print(f"applied {migration.version:04d}_{migration.name}")
            print(f"database schema is at version {latest_version()}")
            if args.app_role:
                password = os.environ.get("FERRUMDECK_APP_ROLE_PASSWORD") or None
                await grant_app_role(conn, args.app_role, password)
                print(f"role {args.app_role!r} may read and append the audit trail, not alter it")
        finally:
            await conn.close()

    try:
        asyncio.run(run())
    except AppRoleError as exc:
        print(f"ferrumdeck migrate: {exc}", file=sys.stderr)
        return 2
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        print(f"ferrumdeck migrate: {_without_password(dsn)}: {reason}", file=sys.stderr)
        return 2
    return 0
