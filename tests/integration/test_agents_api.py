from __future__ import annotations

import asyncio
import uuid

import asyncpg
import pytest
from quart.typing import TestClientProtocol as Client

from services.contract.api import AgentCreate
from services.gateway.audit import Actor
from services.gateway.store.agents import create_version
from tests.support.harness import ToolHarness


def _name() -> str:
    return f"agent-{uuid.uuid4().hex[:8]}"


async def test_register_returns_version_one_with_defaults(
    client: Client, admin: dict[str, str]
) -> None:
    name = _name()
    response = await client.post(
        "/v1/agents", json={"name": name, "model": "scripted"}, headers=admin
    )
    assert response.status_code == 201
    body = await response.get_json()
    assert body["name"] == name
    assert body["version"] == 1
    assert body["budget"]["max_steps"] == 20
    assert body["tools"] == []


async def test_each_registration_is_a_new_immutable_version(
    client: Client, admin: dict[str, str]
) -> None:
    name = _name()
    for prompt in ("first", "second", "third"):
        await client.post(
            "/v1/agents",
            json={"name": name, "model": "scripted", "system_prompt": prompt},
            headers=admin,
        )
    response = await client.get(f"/v1/agents/{name}?limit=2", headers=admin)
    page = await response.get_json()
    assert [a["version"] for a in page["items"]] == [3, 2]
    assert page["items"][1]["system_prompt"] == "second"
    rest = await (
        await client.get(f"/v1/agents/{name}?limit=2&cursor={page['next_cursor']}", headers=admin)
    ).get_json()
    assert [a["version"] for a in rest["items"]] == [1]
    assert rest["next_cursor"] is None


async def test_concurrent_registrations_get_distinct_versions(
    client: Client, admin: dict[str, str]
) -> None:
    name = _name()
    responses = await asyncio.gather(
        *(
            client.post("/v1/agents", json={"name": name, "model": "scripted"}, headers=admin)
            for _ in range(8)
        )
    )
    versions = sorted([(await r.get_json())["version"] for r in responses])
    assert versions == list(range(1, 9))


async def test_list_shows_latest_version_of_each_agent(
    client: Client, admin: dict[str, str]
) -> None:
    name = _name()
    for _ in range(2):
        await client.post("/v1/agents", json={"name": name, "model": "scripted"}, headers=admin)
    seen: dict[str, int] = {}
    cursor = None
    while True:
        url = "/v1/agents?limit=5" + (f"&cursor={cursor}" if cursor else "")
        page = await (await client.get(url, headers=admin)).get_json()
        for agent in page["items"]:
            assert agent["name"] not in seen
            seen[agent["name"]] = agent["version"]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen[name] == 2


async def test_unknown_model_is_rejected_and_nothing_written(
    client: Client, admin: dict[str, str], db: asyncpg.Pool
) -> None:
    name = _name()
    response = await client.post(
        "/v1/agents", json={"name": name, "model": "gpt-4o"}, headers=admin
    )
    assert response.status_code == 422
    body = await response.get_json()
    assert body["error"]["code"] == "unknown_model"
    assert "scripted" in body["error"]["message"]
    assert await db.fetchval("SELECT count(*) FROM agents WHERE name = $1", name) == 0


async def test_params_cannot_redirect_workers(client: Client, admin: dict[str, str]) -> None:
    response = await client.post(
        "/v1/agents",
        json={"name": _name(), "model": "scripted", "params": {"api_base": "http://evil"}},
        headers=admin,
    )
    assert response.status_code == 400
    body = await response.get_json()
    assert body["error"]["code"] == "validation_error"
    assert body["error"]["details"][0]["field"] == "params.api_base"


async def test_unknown_agent_is_404(client: Client, admin: dict[str, str]) -> None:
    response = await client.get(f"/v1/agents/{_name()}", headers=admin)
    assert response.status_code == 404
    assert (await response.get_json())["error"]["code"] == "not_found"


@pytest.mark.parametrize(
    ("model", "says"),
    [
        ("llamafile/x", "defaults to a server on the worker's own machine"),
        ("ollama_chat/x", "defaults to a server on the worker's own machine"),
        ("openai/gpt-4o", "FERRUMDECK_PROVIDER_MODELS=openai"),
        ("anthropic/claude-3-5-haiku-latest", "FERRUMDECK_PROVIDER_MODELS=anthropic"),
    ],
)
async def test_a_model_string_cannot_reach_the_operators_network_or_accounts(
    client: Client, admin: dict[str, str], db: asyncpg.Pool, model: str, says: str
) -> None:
    name = _name()
    response = await client.post("/v1/agents", json={"name": name, "model": model}, headers=admin)
    assert response.status_code == 422
    body = await response.get_json()
    assert body["error"]["code"] == "unknown_model"
    assert says in body["error"]["message"]
    assert await db.fetchval("SELECT count(*) FROM agents WHERE name = $1", name) == 0


async def test_an_agent_whose_model_was_withdrawn_fails_its_next_run_with_the_reason(
    harness: ToolHarness, db: asyncpg.Pool
) -> None:
    """Registered when the operator allowed `openai/…` strings (here: written directly),
    run after they no longer do."""
    name = _name()
    async with db.acquire() as conn:
        await create_version(
            conn, "default", AgentCreate(name=name, model="openai/gpt-4o"), Actor.system("tests")
        )
    response = await harness.client.post(
        "/v1/runs", json={"agent": name, "input": "hello"}, headers=harness.admin
    )
    run_id = (await response.get_json())["id"]
    status, refused = await harness.claim(run_id)
    assert (status, refused["error"]["code"]) == (409, "run_not_running")
    run = await harness.get(run_id)
    assert run["status"] == "failed"
    assert run["error"].startswith("the agent's model is no longer allowed: model 'openai/gpt-4o'")
    assert "FERRUMDECK_PROVIDER_MODELS=openai" in run["error"]
