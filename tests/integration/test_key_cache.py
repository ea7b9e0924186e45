"""Gateways remember valid keys for a while, yet a revoked key is refused at once: on the
gateway that revoked it, on every other one (told through PostgreSQL notifications), and
after a lost listening connection (which may have missed some)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from quart.typing import TestAppProtocol as App

from services.gateway.app import create_app
from services.gateway.auth import hash_secret
from services.gateway.notification_listener import APPLICATION_NAME
from services.gateway.runtime import Runtime
from services.gateway.settings import GatewaySettings
from testbed.waiting import eventually

# Long enough that only an invalidation, never expiry, can explain a refusal.
LONG = 300.0


def _runtime(app: App) -> Runtime:
    found: Runtime = app.app.extensions["ferrumdeck"]  # type: ignore[attr-defined]
    return found


def _bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


async def _listening(app: App) -> None:
    """Until the app's LISTEN connection is up, so its cache answers from memory."""

    async def trusted() -> bool:
        return _runtime(app).key_cache.trusted

    await eventually(trusted, bool, within=10)


async def _new_key(app: App, admin: dict[str, str]) -> tuple[str, str]:
    response = await app.test_client().post(
        "/v1/keys", json={"name": f"cached-{uuid.uuid4().hex[:6]}", "role": "viewer"}, headers=admin
    )
    assert response.status_code == 201
    body = await response.get_json()
    return str(body["id"]), str(body["secret"])


async def _status(app: App, secret: str) -> int:
    return (await app.test_client().get("/v1/agents", headers=_bearer(secret))).status_code


async def _warm(app: App, secret: str) -> None:
    """Use the key once, and check that this gateway now remembers it."""
    await _listening(app)
    assert await _status(app, secret) == 200
    assert _runtime(app).key_cache.cached(hash_secret(secret))


async def _revoke_behind_the_gateways_back(db: asyncpg.Pool, key_id: str) -> None:
    """Revoke with the notifying trigger switched off (replica mode skips triggers): as
    if the notification had been missed."""
    async with db.acquire() as conn, conn.transaction():
        await conn.execute("SET LOCAL session_replication_role = replica")
        await conn.execute(
            "UPDATE api_keys SET revoked_at = now() WHERE id = $1", uuid.UUID(key_id)
        )


@pytest.fixture
def long_lived(settings: GatewaySettings) -> GatewaySettings:
    return settings.model_copy(update={"key_cache_seconds": LONG})


@pytest.fixture
async def gateway(long_lived: GatewaySettings) -> AsyncIterator[App]:
    async with create_app(long_lived).test_app() as app:
        yield app


async def test_a_remembered_key_answers_without_the_database(
    gateway: App, admin: dict[str, str], db: asyncpg.Pool
) -> None:
    """The point of the cache: once seen, the key is not looked up again (a revocation
    nobody announced goes unnoticed, which is why `revoke_key` announces it)."""
    key_id, secret = await _new_key(gateway, admin)
    await _warm(gateway, secret)
    await _revoke_behind_the_gateways_back(db, key_id)
    assert await _status(gateway, secret) == 200


async def test_a_remembered_key_expires(
    settings: GatewaySettings, admin: dict[str, str], db: asyncpg.Pool
) -> None:
    short = settings.model_copy(update={"key_cache_seconds": 0.5})
    async with create_app(short).test_app() as app:
        key_id, secret = await _new_key(app, admin)
        await _warm(app, secret)
        await _revoke_behind_the_gateways_back(db, key_id)
        await eventually(lambda: _status(app, secret), lambda status: status == 401, within=3)


async def test_no_cache_when_disabled(
    settings: GatewaySettings, admin: dict[str, str], db: asyncpg.Pool
) -> None:
    off = settings.model_copy(update={"key_cache_seconds": 0})
    async with create_app(off).test_app() as app:
        key_id, secret = await _new_key(app, admin)
        await _listening_or_not(app)
        assert await _status(app, secret) == 200
        await _revoke_behind_the_gateways_back(db, key_id)
        assert await _status(app, secret) == 401


async def _listening_or_not(app: App) -> None:
    """Until the listener is up: a disabled cache must not be trusted even then, so what
    follows is about the setting, not about timing."""
    hub: Any = app.app.extensions["ferrumdeck.events"]  # type: ignore[attr-defined]

    async def connected() -> bool:
        conn = hub._listener._conn
        return conn is not None and not conn.is_closed()

    await eventually(connected, bool, within=10)
    assert not _runtime(app).key_cache.trusted


async def test_a_revoked_key_is_refused_on_the_very_next_request(
    gateway: App, admin: dict[str, str]
) -> None:
    key_id, secret = await _new_key(gateway, admin)
    await _warm(gateway, secret)
    revoked = await gateway.test_client().delete(f"/v1/keys/{key_id}", headers=admin)
    assert revoked.status_code == 204
    assert await _status(gateway, secret) == 401
    assert not _runtime(gateway).key_cache.cached(hash_secret(secret))


async def test_a_key_revoked_on_another_gateway_is_refused_here_at_once(
    gateway: App, long_lived: GatewaySettings, admin: dict[str, str]
) -> None:
    key_id, secret = await _new_key(gateway, admin)
    async with create_app(long_lived).test_app() as other:
        await _warm(gateway, secret)
        await _warm(other, secret)
        revoked = await other.test_client().delete(f"/v1/keys/{key_id}", headers=admin)
        assert revoked.status_code == 204
        # The notification travels asynchronously; it has well under 2 s, and the
        # entry would otherwise live for LONG seconds.
        await eventually(lambda: _status(gateway, secret), lambda status: status == 401, within=2)
        assert _runtime(gateway).key_cache.trusted
        assert await _status(other, secret) == 401


async def test_a_key_revoked_in_sql_by_hand_is_refused_at_once(
    gateway: App, admin: dict[str, str], db: asyncpg.Pool
) -> None:
    """An operator revoking a leaked key in psql during an incident, not through the API:
    the trigger tells every gateway, whose entry would otherwise live LONG seconds."""
    key_id, secret = await _new_key(gateway, admin)
    await _warm(gateway, secret)
    await db.execute("UPDATE api_keys SET revoked_at = now() WHERE id = $1", uuid.UUID(key_id))
    await eventually(lambda: _status(gateway, secret), lambda status: status == 401, within=2)
    assert _runtime(gateway).key_cache.trusted


async def test_a_lost_listener_empties_the_cache_and_it_is_trusted_again_after(
    gateway: App, admin: dict[str, str], db: asyncpg.Pool
) -> None:
    """Notifications sent while the listening connection was away are gone: whatever was
    remembered before is not trusted afterwards."""
    key_id, secret = await _new_key(gateway, admin)
    _, other_secret = await _new_key(gateway, admin)
    await _warm(gateway, secret)
    killed = await db.fetchval(
        """SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
            WHERE datname = current_database() AND application_name = $1""",
        APPLICATION_NAME,
    )
    assert killed >= 1
    await _revoke_behind_the_gateways_back(db, key_id)
    await eventually(lambda: _status(gateway, secret), lambda status: status == 401, within=3)
    await _warm(gateway, other_secret)  # back to answering from memory
