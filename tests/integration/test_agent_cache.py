"""Gateways remember agent versions, yet a run started by name always gets the latest
version: registered on this gateway or on another (told through PostgreSQL
notifications)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest
from quart.typing import TestAppProtocol as App

from services.gateway.app import create_app
from services.gateway.notification_listener import APPLICATION_NAME
from services.gateway.runtime import Runtime
from services.gateway.settings import GatewaySettings
from testbed.waiting import eventually


def _runtime(app: App) -> Runtime:
    found: Runtime = app.app.extensions["ferrumdeck"]  # type: ignore[attr-defined]
    return found


async def _listening(app: App) -> None:
    async def trusted() -> bool:
        return _runtime(app).agent_cache.trusted

    await eventually(trusted, bool, within=10)


async def _register(app: App, admin: dict[str, str], name: str, prompt: str) -> int:
    response = await app.test_client().post(
        "/v1/agents",
        json={"name": name, "model": "scripted", "system_prompt": prompt},
        headers=admin,
    )
    assert response.status_code == 201, await response.get_json()
    return int((await response.get_json())["version"])


async def _start(app: App, admin: dict[str, str], agent: str) -> dict[str, object]:
    response = await app.test_client().post(
        "/v1/runs", json={"agent": agent, "input": "hi"}, headers=admin
    )
    assert response.status_code == 202, await response.get_json()
    run: dict[str, object] = await response.get_json()
    return run


async def _started_version(app: App, admin: dict[str, str], agent: str) -> int:
    return int(str((await _start(app, admin, agent))["agent_version"]))


@pytest.fixture
async def gateway(settings: GatewaySettings) -> AsyncIterator[App]:
    async with create_app(settings).test_app() as app:
        await _listening(app)
        yield app


def _name() -> str:
    return f"cached-{uuid.uuid4().hex[:8]}"


async def test_the_next_run_gets_a_version_registered_here(
    gateway: App, admin: dict[str, str], worker: dict[str, str]
) -> None:
    name = _name()
    await _register(gateway, admin, name, "first")
    assert await _started_version(gateway, admin, name) == 1
    assert await _started_version(gateway, admin, name) == 1  # now from memory
    await _register(gateway, admin, name, "second")
    run = await _start(gateway, admin, name)
    assert run["agent_version"] == 2
    claimed = await gateway.test_client().post(
        f"/v1/worker/runs/{run['id']}/claim", json={"worker_id": "w1"}, headers=worker
    )
    assert claimed.status_code == 200
    agent = (await claimed.get_json())["agent"]
    assert (agent["version"], agent["system_prompt"]) == (2, "second")
    assert await _started_version(gateway, admin, f"{name}@1") == 1


async def test_the_next_run_gets_a_version_registered_on_another_gateway(
    gateway: App, settings: GatewaySettings, admin: dict[str, str]
) -> None:
    name = _name()
    await _register(gateway, admin, name, "first")
    async with create_app(settings).test_app() as other:
        await _listening(other)
        assert await _started_version(gateway, admin, name) == 1
        assert await _started_version(other, admin, name) == 1
        assert await _register(other, admin, name, "second") == 2
        assert await _started_version(other, admin, name) == 2
        # The notification travels asynchronously; without it this gateway would start
        # version 1 for as long as it runs.
        await eventually(
            lambda: _started_version(gateway, admin, name), lambda version: version == 2, within=2
        )


async def test_a_version_inserted_in_sql_by_hand_is_the_latest_at_once(
    gateway: App, admin: dict[str, str], db: asyncpg.Pool
) -> None:
    """Not through the API: the trigger on `agents` still tells every gateway."""
    name = _name()
    await _register(gateway, admin, name, "first")
    assert await _started_version(gateway, admin, name) == 1
    await db.execute(
        """INSERT INTO agents (project, name, version, model, system_prompt, budget)
           VALUES ('default', $1, 2, 'scripted', 'by hand', '{}')""",
        name,
    )
    await eventually(
        lambda: _started_version(gateway, admin, name), lambda version: version == 2, within=2
    )
    assert _runtime(gateway).agent_cache.trusted


async def test_latest_versions_are_served_from_memory_only_while_listening(
    gateway: App, admin: dict[str, str], db: asyncpg.Pool
) -> None:
    """A version written without its announcement (the notifying trigger switched off:
    replica mode skips triggers) is not seen while the cache is trusted (the read was
    saved), and is seen once the listening connection was lost, since announcements
    might have been missed meanwhile."""
    name = _name()
    await _register(gateway, admin, name, "first")
    assert await _started_version(gateway, admin, name) == 1
    async with db.acquire() as conn, conn.transaction():
        await conn.execute("SET LOCAL session_replication_role = replica")
        await conn.execute(
            """INSERT INTO agents (project, name, version, model, system_prompt, budget)
               VALUES ('default', $1, 2, 'scripted', 'unannounced', '{}')""",
            name,
        )
    assert await _started_version(gateway, admin, name) == 1
    assert await _started_version(gateway, admin, f"{name}@2") == 2
    await db.execute(
        """SELECT pg_terminate_backend(pid) FROM pg_stat_activity
            WHERE datname = current_database() AND application_name = $1""",
        APPLICATION_NAME,
    )
    await eventually(
        lambda: _started_version(gateway, admin, name), lambda version: version == 2, within=3
    )
    await _listening(gateway)
