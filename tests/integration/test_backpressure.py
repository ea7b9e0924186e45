"""Past the backlog bound, new runs are refused with 429 instead of queued forever — from
the projects holding their share of the bound, never from a project with a run or two.

Each test has a database of its own: the bound counts every project's queued runs."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import asyncpg
import pytest
from quart.typing import TestClientProtocol as Client
from redis.asyncio import Redis

from services.contract.api import AgentCreate, Role
from services.contract.queue import ProjectQuota
from services.gateway.app import create_app
from services.gateway.audit import Actor
from services.gateway.db.connections import connect, create_pool
from services.gateway.db.migrations import migrate
from services.gateway.settings import GatewaySettings
from services.gateway.store.agents import create_version
from services.gateway.store.keys import create_key
from services.gateway.store.quotas import set_quota
from testbed.streams import read_new
from testbed.waiting import eventually
from tests.support.harness import ToolHarness
from tests.support.sealing import SEAL

TESTS = Actor.system("tests")


@dataclass
class Platform:
    client: Client
    keys: dict[str, dict[str, str]]
    settings: GatewaySettings
    pool: asyncpg.Pool

    async def start(self, project: str, label: str) -> tuple[int, dict[str, object]]:
        response = await self.client.post(
            "/v1/runs", json={"agent": "a", "input": label}, headers=self.keys[project]
        )
        return response.status_code, await response.get_json()

    async def queued(self, project: str) -> int:
        return int(
            await self.pool.fetchval(
                "SELECT count(*) FROM runs WHERE project = $1 AND status = 'queued'", project
            )
        )


@pytest.fixture
async def platform(empty_database: str, settings: GatewaySettings) -> AsyncIterator[Platform]:
    conn = await connect(empty_database, seal=SEAL)
    keys = {}
    try:
        await migrate(conn)
        for project in ("flood", "quiet"):
            _, secret = await create_key(conn, f"{project}-admin", Role.ADMIN, project, TESTS)
            await create_version(conn, project, AgentCreate(name="a", model="scripted"), TESTS)
            keys[project] = {"Authorization": f"Bearer {secret}"}
    finally:
        await conn.close()
    bounded = settings.model_copy(
        update={
            "database_url": empty_database,
            "max_queue_lag": 20,
            "dispatch_window": 5,
            "backpressure_refresh_seconds": 0,
        }
    )
    pool = await create_pool(empty_database, min_size=1, max_size=2, seal=SEAL)
    try:
        async with create_app(bounded).test_app() as app:
            yield Platform(app.test_client(), keys, bounded, pool)
    finally:
        await pool.close()


async def test_a_flooding_project_is_refused_and_the_quiet_one_still_gets_in(
    platform: Platform,
) -> None:
    accepted = 0
    while True:
        status, body = await platform.start("flood", f"flood {accepted}")
        if status == 429:
            break
        assert status == 202, body
        accepted += 1
        assert accepted < 100, "never refused"
    # Alone past the bound, the flood holds all of it.
    assert accepted == 21
    error = body["error"]
    assert isinstance(error, dict)
    assert error["code"] == "too_many_requests"
    assert error["message"] == (
        "not accepting runs now: this project has 21 runs waiting for a worker, its share "
        "of the platform's capacity"
    )
    for n in range(3):
        status, body = await platform.start("quiet", f"quiet {n}")
        assert status == 202, body
    assert await platform.queued("quiet") == 3
    assert (await platform.start("flood", "still"))[0] == 429

    # Each project is shown its own backlog, and whether its own runs get in.
    for project, expected in (("quiet", (3, 20, True)), ("flood", (21, 20, False))):
        response = await platform.client.get("/v1/queue", headers=platform.keys[project])
        queue = await response.get_json()
        assert (queue["waiting"], queue["max_lag"], queue["accepting_runs"]) == expected


async def test_once_workers_take_runs_the_flood_gets_in_again(
    platform: Platform, redis: Redis
) -> None:
    for n in range(21):
        assert (await platform.start("flood", f"flood {n}"))[0] == 202
    assert (await platform.start("flood", "refused"))[0] == 429
    streams = platform.settings.streams
    await redis.xgroup_create(streams.runs, streams.group, id="0", mkstream=True)
    delivered = await eventually(
        lambda: read_new(redis, streams.group, "drainer", streams.runs, count=10),
        bool,
    )
    # A worker claims them: no longer queued.
    ids = [uuid.UUID(fields[b"run_id"].decode()) for _, fields in delivered]
    await platform.pool.execute("UPDATE runs SET status = 'running' WHERE id = ANY($1)", ids)
    assert (await platform.start("flood", "again"))[0] == 202


async def test_queue_shows_the_bounds_while_accepting(harness: ToolHarness) -> None:
    queue = await (await harness.client.get("/v1/queue", headers=harness.admin)).get_json()
    assert queue["accepting_runs"] is True
    assert queue["max_lag"] == 10_000


async def _quota(platform: Platform, project: str, **limits: float) -> None:
    async with platform.pool.acquire() as conn:
        await set_quota(conn, project, ProjectQuota.model_validate(limits), TESTS)


async def test_past_its_queued_quota_only_that_project_gets_429(platform: Platform) -> None:
    await _quota(platform, "flood", max_queued=3)
    for n in range(3):
        assert (await platform.start("flood", f"q{n}"))[0] == 202
    status, body = await platform.start("flood", "one too many")
    assert status == 429
    error = body["error"]
    assert isinstance(error, dict)
    assert error["message"] == (
        "not accepting runs now: this project's quota of 3 queued runs is reached"
    )
    assert (await platform.start("quiet", "unaffected"))[0] == 202
    queue = await (
        await platform.client.get("/v1/queue", headers=platform.keys["flood"])
    ).get_json()
    assert queue["quota"] == {"max_queued": 3, "max_running": None, "runs_per_second": None}
    assert queue["accepting_runs"] is False
    other = await (
        await platform.client.get("/v1/queue", headers=platform.keys["quiet"])
    ).get_json()
    assert other["quota"] is None


async def test_past_its_running_quota_the_project_waits(platform: Platform) -> None:
    await _quota(platform, "flood", max_running=1)
    assert (await platform.start("flood", "first"))[0] == 202
    await platform.pool.execute("UPDATE runs SET status = 'running' WHERE project = 'flood'")
    status, body = await platform.start("flood", "second")
    assert status == 429
    assert "quota of 1 running runs" in str(body)


async def test_past_its_rate_a_project_is_told_when_to_retry(platform: Platform) -> None:
    await _quota(platform, "flood", runs_per_second=0.5)  # one run per two seconds
    statuses = []
    retry_after = None
    for n in range(3):
        response = await platform.client.post(
            "/v1/runs", json={"agent": "a", "input": f"r{n}"}, headers=platform.keys["flood"]
        )
        statuses.append(response.status_code)
        if response.status_code == 429:
            retry_after = response.headers["Retry-After"]
    assert statuses[0] == 202
    assert 429 in statuses
    assert retry_after == "2"
    assert (await platform.start("quiet", "unaffected"))[0] == 202


async def _summary(platform: Platform, project: str) -> dict[str, object]:
    response = await platform.client.get(
        "/v1/runs/summary", query_string={"minutes": 15}, headers=platform.keys[project]
    )
    assert response.status_code == 200
    summary: dict[str, object] = await response.get_json()
    return summary


async def test_the_summary_counts_the_projects_own_refusals_and_says_of_which_minutes(
    platform: Platform,
) -> None:
    """An operator asked why a client cannot get in sees it on the dashboard: the 429s
    of its project, and none of another project's."""
    before = {p: await _summary(platform, p) for p in ("flood", "quiet")}
    await _quota(platform, "flood", max_queued=1)
    assert (await platform.start("flood", "first"))[0] == 202
    for n in range(4):
        assert (await platform.start("flood", f"refused {n}"))[0] == 429
    assert (await platform.start("quiet", "gets in"))[0] == 202
    flood, quiet = await _summary(platform, "flood"), await _summary(platform, "quiet")
    assert flood["refused"] == int(str(before["flood"]["refused"])) + 4
    assert quiet["refused"] == before["quiet"]["refused"]
    assert flood["refused_minutes"] in (15, 16)  # the window's whole minutes, the last open
    assert flood["refused_since"] is not None
    old = await platform.client.get(
        "/v1/runs/summary",
        query_string={"minutes": 15, "until": "2020-01-01T00:00:00Z"},
        headers=platform.keys["flood"],
    )
    assert (await old.get_json())["refused_minutes"] == 0  # not kept that long: not "0 refused"
