from __future__ import annotations

import asyncio
import json
import uuid

import asyncpg
import pytest
from quart.typing import TestClientProtocol as Client
from redis.asyncio import Redis

from services.contract.api import Role
from services.gateway.audit import Actor
from services.gateway.settings import GatewaySettings
from services.gateway.store.keys import create_key
from testbed.streams import entries
from testbed.waiting import eventually


@pytest.fixture
async def agent(client: Client, admin: dict[str, str]) -> str:
    name = f"agent-{uuid.uuid4().hex[:8]}"
    response = await client.post(
        "/v1/agents", json={"name": name, "model": "scripted"}, headers=admin
    )
    assert response.status_code == 201
    return name


async def _runs_of(db: asyncpg.Pool, agent: str) -> int:
    return int(await db.fetchval("SELECT count(*) FROM runs WHERE agent_name = $1", agent))


async def _stream_run_ids(redis: Redis, settings: GatewaySettings, expect: int) -> list[str]:
    """The run ids published so far, once there are at least `expect` of them."""

    async def published() -> list[str]:
        found = await entries(redis, settings.streams.runs)
        return [fields[b"run_id"].decode() for _, fields in found]

    return await eventually(published, lambda ids: len(ids) >= expect)


async def test_create_answers_202_and_publishes_the_job(
    client: Client,
    admin: dict[str, str],
    agent: str,
    redis: Redis,
    settings: GatewaySettings,
    db: asyncpg.Pool,
) -> None:
    response = await client.post(
        "/v1/runs",
        json={"agent": agent, "input": "hi", "metadata": {"ticket": "T-1"}},
        headers=admin,
    )
    assert response.status_code == 202
    run = await response.get_json()
    assert run["status"] == "queued"
    assert run["agent_version"] == 1
    assert run["metadata"] == {"ticket": "T-1"}
    assert run["usage"] == {
        "prompt_tokens": 0,
        "completion_tokens": 0,
        "total_tokens": 0,
        "cost_usd": None,
    }, "no model call yet: the cost is unknown, not $0"
    assert response.headers["Location"] == f"/v1/runs/{run['id']}"
    assert await _stream_run_ids(redis, settings, 1) == [run["id"]]
    await eventually(
        lambda: db.fetchval("SELECT count(*) FROM outbox WHERE run_id = $1", uuid.UUID(run["id"])),
        lambda rows: rows == 0,
    )


async def test_agent_version_can_be_pinned(
    client: Client, admin: dict[str, str], agent: str
) -> None:
    await client.post("/v1/agents", json={"name": agent, "model": "scripted"}, headers=admin)
    latest = await (
        await client.post("/v1/runs", json={"agent": agent, "input": "x"}, headers=admin)
    ).get_json()
    pinned = await (
        await client.post("/v1/runs", json={"agent": f"{agent}@1", "input": "x"}, headers=admin)
    ).get_json()
    assert (latest["agent_version"], pinned["agent_version"]) == (2, 1)


async def test_unknown_agent_writes_nothing(
    client: Client, admin: dict[str, str], db: asyncpg.Pool
) -> None:
    response = await client.post(
        "/v1/runs", json={"agent": "nobody-here", "input": "x"}, headers=admin
    )
    assert response.status_code == 422
    assert (await response.get_json())["error"]["code"] == "unknown_agent"
    assert await _runs_of(db, "nobody-here") == 0


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b'{"agent": "a", "input": ', 400, "invalid_json"),
        (b'{"agent": 5, "input": "x"}', 400, "validation_error"),
        (b'{"agent": "a"}', 400, "validation_error"),
        (b'{"agent": "a", "input": "x", "surprise": 1}', 400, "validation_error"),
        (b'["not", "an", "object"]', 400, "validation_error"),
        (
            json.dumps({"agent": "a", "input": "x" * 100_000}).encode(),
            413,
            "request_entity_too_large",
        ),
    ],
)
async def test_bad_bodies_get_a_clear_error_and_write_nothing(
    client: Client,
    admin: dict[str, str],
    agent: str,
    db: asyncpg.Pool,
    body: bytes,
    status: int,
    code: str,
) -> None:
    response = await client.post(
        "/v1/runs",
        data=body.replace(b'"a"', json.dumps(agent).encode()),
        headers={**admin, "Content-Type": "application/json"},
    )
    assert response.status_code == status
    error = (await response.get_json())["error"]
    assert error["code"] == code
    assert error["message"]
    assert await _runs_of(db, agent) == 0


async def test_validation_errors_name_the_field(client: Client, admin: dict[str, str]) -> None:
    response = await client.post("/v1/runs", json={"agent": "a", "input": ""}, headers=admin)
    error = (await response.get_json())["error"]
    assert [d["field"] for d in error["details"]] == ["input"]
    assert "input" in error["message"]


@pytest.mark.parametrize("header", [None, "Bearer nope", "Bearer fd_unknown", "Basic abc"])
async def test_requests_without_a_valid_key_are_401(client: Client, header: str | None) -> None:
    headers = {"Authorization": header} if header else {}
    response = await client.get("/v1/runs", headers=headers)
    assert response.status_code == 401
    assert (await response.get_json())["error"]["code"] == "unauthorized"
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


async def test_worker_keys_cannot_use_the_public_api(
    client: Client, worker: dict[str, str]
) -> None:
    assert (await client.get("/v1/runs", headers=worker)).status_code == 401


async def test_idempotency_key_returns_the_same_run_once(
    client: Client,
    admin: dict[str, str],
    agent: str,
    db: asyncpg.Pool,
    redis: Redis,
    settings: GatewaySettings,
) -> None:
    headers = {**admin, "Idempotency-Key": f"key-{uuid.uuid4()}"}
    body = {"agent": agent, "input": "once"}
    first = await client.post("/v1/runs", json=body, headers=headers)
    again = await asyncio.gather(
        *(client.post("/v1/runs", json=body, headers=headers) for _ in range(5))
    )
    ids = {(await r.get_json())["id"] for r in [first, *again]}
    assert len(ids) == 1
    assert all(r.status_code == 202 for r in again)
    assert all(r.headers["Idempotent-Replayed"] == "true" for r in again)
    assert await _runs_of(db, agent) == 1
    await asyncio.sleep(0.3)
    assert await _stream_run_ids(redis, settings, 1) == list(ids)


async def test_idempotency_key_reused_for_another_request_is_409(
    client: Client, admin: dict[str, str], agent: str, db: asyncpg.Pool
) -> None:
    headers = {**admin, "Idempotency-Key": f"key-{uuid.uuid4()}"}
    await client.post("/v1/runs", json={"agent": agent, "input": "one"}, headers=headers)
    response = await client.post("/v1/runs", json={"agent": agent, "input": "two"}, headers=headers)
    assert response.status_code == 409
    assert (await response.get_json())["error"]["code"] == "idempotency_key_reused"
    assert await _runs_of(db, agent) == 1


@pytest.mark.parametrize("run_id", ["not-a-uuid", str(uuid.uuid4())])
async def test_missing_runs_are_404(client: Client, admin: dict[str, str], run_id: str) -> None:
    for path in (f"/v1/runs/{run_id}", f"/v1/runs/{run_id}/steps"):
        response = await client.get(path, headers=admin)
        assert response.status_code == 404
    assert (await client.post(f"/v1/runs/{run_id}/cancel", headers=admin)).status_code == 404


async def test_list_filters_and_pages_newest_first(
    client: Client, admin: dict[str, str], agent: str
) -> None:
    created = []
    for i in range(5):
        run = await (
            await client.post("/v1/runs", json={"agent": agent, "input": f"n{i}"}, headers=admin)
        ).get_json()
        created.append(run["id"])
    await client.post(f"/v1/runs/{created[0]}/cancel", headers=admin)

    seen: list[str] = []
    cursor = ""
    while True:
        page = await (
            await client.get(f"/v1/runs?agent={agent}&limit=2{cursor}", headers=admin)
        ).get_json()
        seen += [r["id"] for r in page["items"]]
        if page["next_cursor"] is None:
            break
        cursor = f"&cursor={page['next_cursor']}"
    assert seen == created[::-1]

    cancelled = await (
        await client.get(f"/v1/runs?agent={agent}&status=cancelled", headers=admin)
    ).get_json()
    assert [r["id"] for r in cancelled["items"]] == [created[0]]


async def test_a_run_is_found_by_the_end_of_its_id_in_its_own_project_only(
    client: Client, admin: dict[str, str], agent: str, db: asyncpg.Pool
) -> None:
    """The deck and the CLI show a run's last 8 characters; an operator types those."""
    created = [
        (await (await client.post("/v1/runs", json={"agent": agent, "input": f"s{i}"},
                                  headers=admin)).get_json())["id"]
        for i in range(3)
    ]  # fmt: skip
    wanted = created[1]
    page = await (
        await client.get(f"/v1/runs?id_ends_with={wanted[-8:]}", headers=admin)
    ).get_json()
    assert [r["id"] for r in page["items"]] == [wanted]
    whole = await (await client.get(f"/v1/runs?id_ends_with={wanted}", headers=admin)).get_json()
    assert [r["id"] for r in whole["items"]] == [wanted]

    async with db.acquire() as conn:
        _, secret = await create_key(
            conn, "suffix-other", Role.ADMIN, f"other-{uuid.uuid4().hex[:6]}", Actor.system("t")
        )
    other = {"Authorization": f"Bearer {secret}"}
    theirs = await (
        await client.get(f"/v1/runs?id_ends_with={wanted[-8:]}", headers=other)
    ).get_json()
    assert theirs["items"] == []


@pytest.mark.parametrize(
    "query",
    [
        "cursor=garbage!",
        "status=sleeping",
        "limit=0",
        "limit=1000",
        "agent=Bad Name",
        "id_ends_with=abc",
        "id_ends_with=ab%25cd",
        "id_ends_with=ABCD_",
    ],
)
async def test_bad_list_queries_are_400(client: Client, admin: dict[str, str], query: str) -> None:
    response = await client.get(f"/v1/runs?{query}", headers=admin)
    assert response.status_code == 400
    assert (await response.get_json())["error"]["code"] in {"invalid_cursor", "validation_error"}


async def test_cancel_a_queued_run_then_again(
    client: Client, admin: dict[str, str], agent: str
) -> None:
    run = await (
        await client.post("/v1/runs", json={"agent": agent, "input": "x"}, headers=admin)
    ).get_json()
    response = await client.post(f"/v1/runs/{run['id']}/cancel", headers=admin)
    assert response.status_code == 200
    cancelled = await response.get_json()
    assert cancelled["status"] == "cancelled"
    assert cancelled["finished_at"] is not None
    again = await client.post(f"/v1/runs/{run['id']}/cancel", headers=admin)
    assert again.status_code == 409
    assert (await again.get_json())["error"]["code"] == "run_finished"


async def test_openapi_describes_the_public_api(client: Client) -> None:
    spec = await (await client.get("/openapi.json")).get_json()
    paths = spec["paths"]
    assert {"/v1/agents", "/v1/runs", "/v1/runs/{run_id}", "/v1/runs/{run_id}/steps"} <= set(paths)
    assert "requestBody" in paths["/v1/runs"]["post"]
    assert "202" in paths["/v1/runs"]["post"]["responses"]
    assert (await client.get("/docs")).status_code == 200
