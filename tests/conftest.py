"""Fixtures: real PostgreSQL and Redis (the machine's, or embedded), a throw-away database
and stream prefix per run, and a scripted OpenAI-compatible model server."""

from __future__ import annotations

import os
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import pytest
import yaml
from quart.typing import TestAppProtocol as App
from quart.typing import TestClientProtocol as Client
from redis.asyncio import Redis

from services.contract.api import Role
from services.contract.audit_checkpoint import generate_signing_key
from services.gateway.app import create_app
from services.gateway.audit import Actor
from services.gateway.db.app_role import as_role, grant_app_role
from services.gateway.db.connections import connect, create_pool
from services.gateway.db.migrations import migrate
from services.gateway.settings import GatewaySettings
from services.gateway.store.keys import create_key
from testbed import servers
from tests.support.harness import ToolHarness
from tests.support.scripted_llm import ScriptedLLM, serve_llm
from tests.support.sealing import SEAL, TEST_AUDIT_KEY

# A stray .env in the checkout must not leak settings into the processes tests start.
os.environ["FERRUMDECK_ENV_FILE"] = ""
# Every test stack shares one database; a sweeper re-publishing other tests' old queued
# runs into its own stream would make them run there. Tests of re-publishing call it.
os.environ["FERRUMDECK_REQUEUE_AFTER_SECONDS"] = "86400"
# The gateways tests start (in process and as processes that inherit this environment)
# key the audit chain with this, so what one links another verifies.
os.environ["FERRUMDECK_AUDIT_KEY"] = TEST_AUDIT_KEY

TESTS = Actor.system("test suite")
# Whole directories whose every test is of one kind; `make test-quick` leaves them out.
# Each of them starts real processes (stacks, gateways, honcho) and takes seconds a test.
MARKERS_BY_DIRECTORY = {
    "chaos": ("chaos", "slow"),
    "fuzz": ("fuzz", "slow"),
    "e2e": ("slow",),
    "tui": ("slow",),
    "ops": ("slow",),
}
PRICE_IN = 0.000002
PRICE_OUT = 0.000004


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        directory = item.path.relative_to(here).parts[0]
        for marker in MARKERS_BY_DIRECTORY.get(directory, ()):
            item.add_marker(marker)


@pytest.fixture(scope="session")
def scratch() -> Iterator[Path]:
    """Outside pytest's own temp root on purpose: that one is private to its owner (0700),
    and embedded PostgreSQL runs as another user when the tests run as root."""
    with tempfile.TemporaryDirectory(prefix="ferrumdeck-test-") as path:
        os.chmod(path, 0o755)
        yield Path(path)


@pytest.fixture(scope="session")
async def database_url(scratch: Path) -> AsyncIterator[str]:
    async with (
        servers.postgres_admin_dsn(scratch) as admin_dsn,
        servers.throwaway_database(admin_dsn) as dsn,
    ):
        conn = await connect(dsn, seal=SEAL)
        try:
            await migrate(conn)
        finally:
            await conn.close()
        yield dsn


@pytest.fixture(scope="session")
async def app_database_url(database_url: str) -> AsyncIterator[str]:
    """The gateway's own role, as deployed (`ferrumdeck migrate --app-role`): the tests'
    gateways run with the grants production has, while `database_url` (the superuser)
    is what tests inspect and tamper with."""
    role = f"fdapp_{urlsplit(database_url).path.rpartition('_')[2]}"
    conn = await connect(database_url, seal=SEAL)
    try:
        await grant_app_role(conn, role, None)
    finally:
        await conn.close()
    yield as_role(database_url, role)
    conn = await connect(database_url, seal=SEAL)
    try:
        await conn.execute(f'DROP OWNED BY "{role}"')
        await conn.execute(f'DROP ROLE "{role}"')
    finally:
        await conn.close()


@pytest.fixture
async def empty_database(scratch: Path) -> AsyncIterator[str]:
    async with (
        servers.postgres_admin_dsn(scratch) as admin_dsn,
        servers.throwaway_database(admin_dsn) as dsn,
    ):
        yield dsn


@pytest.fixture(scope="session")
async def db(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(database_url, seal=SEAL)
    yield pool
    await pool.close()


@pytest.fixture(scope="session")
async def redis_url(scratch: Path) -> AsyncIterator[str]:
    async with servers.redis_url(scratch) as url:
        yield url


@pytest.fixture
async def prefix(redis_url: str) -> AsyncIterator[str]:
    value = servers.unique_prefix()
    yield value
    await servers.delete_prefix(redis_url, value)


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest.fixture(scope="session")
async def llm() -> AsyncIterator[ScriptedLLM]:
    scripted = ScriptedLLM()
    async with serve_llm(scripted) as base_url:
        scripted.base_url = base_url  # type: ignore[attr-defined]
        yield scripted


@pytest.fixture(scope="session")
def models_file(llm: ScriptedLLM, scratch: Path) -> Path:
    """`scripted` has configured prices; `unpriced` has none (cost unknown);
    `mapped` is a model LiteLLM's own price map knows."""
    base = llm.base_url  # type: ignore[attr-defined]
    entries = [
        {
            "model_name": "scripted",
            "litellm_params": {
                "model": "openai/scripted",
                "api_base": base,
                "api_key": "test",
                "input_cost_per_token": PRICE_IN,
                "output_cost_per_token": PRICE_OUT,
            },
        },
        {
            "model_name": "unpriced",
            "litellm_params": {"model": "openai/no-such-model", "api_base": base, "api_key": "t"},
        },
        {
            "model_name": "mapped",
            "litellm_params": {"model": "openai/gpt-4o-mini", "api_base": base, "api_key": "t"},
        },
    ]
    path = scratch / "models.yaml"
    path.write_text(yaml.safe_dump({"model_list": entries}))
    return path


@pytest.fixture(scope="session")
def audit_signing_key(scratch: Path) -> Path:
    """The key the test gateways check audit checkpoints with."""
    path = scratch / "audit-signing.pem"
    generate_signing_key(path)
    return path


@pytest.fixture
def settings(
    app_database_url: str, redis_url: str, prefix: str, models_file: Path, audit_signing_key: Path
) -> GatewaySettings:
    return GatewaySettings(
        database_url=app_database_url,
        audit_signing_key_file=audit_signing_key,
        redis_url=redis_url,
        stream_prefix=prefix,
        models=models_file,
        relay_poll_seconds=0.2,
        sweep_seconds=0.2,
        auth_failure_limit=1000,
        max_body_bytes=64 * 1024,
        # No worker drains the stream in these tests; they read it themselves and expect
        # every job in it. The window is tested where it is meant to act (test_outbox,
        # test_backpressure) and by the stacks with real workers.
        dispatch_window=100_000,
        # The operator's view: these tests read the stream's own figures. The project
        # view is tested in test_queue_api.
        platform_view=True,
    )


@pytest.fixture
async def app(settings: GatewaySettings) -> AsyncIterator[App]:
    async with create_app(settings).test_app() as test_app:
        yield test_app


@pytest.fixture
def client(app: App) -> Client:
    return app.test_client()


@pytest.fixture(scope="session")
async def admin_key(db: asyncpg.Pool) -> str:
    async with db.acquire() as conn:
        _, secret = await create_key(conn, "test-admin", Role.ADMIN, "default", TESTS)
    return secret


@pytest.fixture(scope="session")
async def worker_key(db: asyncpg.Pool) -> str:
    async with db.acquire() as conn:
        _, secret = await create_key(conn, "test-worker", Role.WORKER, None, TESTS)
    return secret


@pytest.fixture
def admin(admin_key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {admin_key}"}


@pytest.fixture
def worker(worker_key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {worker_key}"}


@pytest.fixture
def harness(client: Client, admin: dict[str, str], worker: dict[str, str]) -> ToolHarness:
    return ToolHarness(client, admin, worker)
