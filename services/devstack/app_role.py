"""The dev stack's gateway and worker connect as the least-privileged app role, as a
deployment's do (`ferrumdeck migrate --app-role`), so what runs locally is refused what
a deployed gateway is refused; the stack itself migrates as the embedded server's owner."""

from __future__ import annotations

from services.gateway.db.app_role import as_role, grant_app_role
from services.gateway.db.connections import connect

APP_ROLE = "ferrumdeck_app"


async def app_role_url(owner_url: str) -> str:
    """Grant the app role on the owner's database; its DSN (trust auth: no password)."""
    conn = await connect(owner_url)
    try:
        await grant_app_role(conn, APP_ROLE, None)
    finally:
        await conn.close()
    return as_role(owner_url, APP_ROLE)
