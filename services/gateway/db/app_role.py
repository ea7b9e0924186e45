"""The role the gateway connects as: every table's rows, but the audit trail's only to
read and append.

Migrations run as the schema's owner, who can do anything to its tables, including
`ALTER TABLE … DISABLE TRIGGER`, which lifts the append-only triggers. The gateway needs
none of that, so it connects as a role that owns nothing: it may `SELECT` and `INSERT`
audit rows, and has no `UPDATE`, `DELETE`, `TRUNCATE`, `TRIGGER` or ownership to alter
them with. A compromised gateway (or anyone holding its database password) can append
to the trail but not rewrite it. Granting is idempotent and covers every table there
is, so `ferrumdeck migrate --app-role NAME` re-grants after each migration.

It appends events without choosing their ids (`INSERT` on every column but `id`): the
sequence hands ids out, so an event it forges cannot pose as one from before events
carried MACs (`audit_mac_switch`, which it may only read).
"""

from __future__ import annotations

import re
from urllib.parse import quote, urlsplit, urlunsplit

import asyncpg

ROLE_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
AUDIT_TABLES = ("audit_events", "audit_chain")
# Every column of an event but its id, which the sequence gives.
_EVENT_COLUMNS = (
    "project, actor, actor_kind, action, target, details, request_id, created_at, mac_key_id, mac"
)


class AppRoleError(ValueError):
    """The role cannot be made or granted, in one line."""


def _ident(name: str) -> str:
    if not ROLE_NAME.match(name):
        raise AppRoleError(
            f"role name {name!r}: use lower-case letters, digits and _ (not first a digit)"
        )
    return f'"{name}"'


async def grant_app_role(conn: asyncpg.Connection, name: str, password: str | None) -> None:
    """Create `name` if need be (a login role with no other attribute) and grant it what
    the gateway needs in the current database, and no more."""
    role = _ident(name)
    try:
        async with conn.transaction():
            exists = await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", name)
            if not exists:
                await conn.execute(f"CREATE ROLE {role} LOGIN")
            if password is not None:
                literal = await conn.fetchval("SELECT quote_literal($1::text)", password)
                await conn.execute(f"ALTER ROLE {role} PASSWORD {literal}")
            database = await conn.fetchval("SELECT quote_ident(current_database())")
            audit = ", ".join(AUDIT_TABLES)
            for statement in (
                f"GRANT CONNECT, TEMPORARY ON DATABASE {database} TO {role}",
                f"GRANT USAGE ON SCHEMA public TO {role}",
                f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {role}",
                f"REVOKE UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER ON {audit} FROM {role}",
                f"REVOKE INSERT, UPDATE, DELETE ON schema_migrations FROM {role}",
                f"REVOKE INSERT, UPDATE, DELETE ON audit_mac_switch FROM {role}",
                f"REVOKE INSERT ON audit_events FROM {role}",
                f"GRANT INSERT ({_EVENT_COLUMNS}) ON audit_events TO {role}",
                f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {role}",
            ):
                await conn.execute(statement)
    except asyncpg.InsufficientPrivilegeError as exc:
        raise AppRoleError(
            f"cannot create or grant role {name!r}: {exc} (run migrate as the schema's owner, "
            "with CREATEROLE)"
        ) from None


def as_role(dsn: str, name: str, password: str | None = None) -> str:
    """`dsn` with `name` (and `password`) for its user: the same server and database."""
    parts = urlsplit(dsn)
    host = parts.netloc.rpartition("@")[2]
    user = quote(name, safe="") + (f":{quote(password, safe='')}" if password else "")
    return urlunsplit(parts._replace(netloc=f"{user}@{host}"))
