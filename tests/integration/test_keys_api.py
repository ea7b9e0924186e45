"""A project's keys page like every other list (`limit`, `cursor`), and `ferrumdeck keys
list` / `keys revoke ID` reach them through the API with an admin key."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest
from quart.typing import TestClientProtocol as Client

from services.contract.api import Role
from services.gateway.audit import Actor
from services.gateway.settings import GatewaySettings
from services.gateway.store.keys import create_key
from tests.support.gateway_server import ServedGateway, serve_gateway

COMMAND = [sys.executable, "-m", "services.cli.main"]


@pytest.fixture
async def project_admin(db: asyncpg.Pool) -> str:
    """An admin key of a project of its own: its key list is this test's alone."""
    async with db.acquire() as conn:
        _, secret = await create_key(
            conn, "keys-admin", Role.ADMIN, f"keys-{uuid.uuid4().hex[:6]}", Actor.system("tests")
        )
    return secret


def _bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


async def test_keys_are_listed_a_page_at_a_time(client: Client, project_admin: str) -> None:
    admin = _bearer(project_admin)
    made = [
        (
            await (
                await client.post(
                    "/v1/keys", json={"name": f"k{i}", "role": "viewer"}, headers=admin
                )
            ).get_json()
        )["id"]
        for i in range(4)
    ]
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        query = f"?limit=2&cursor={cursor}" if cursor else "?limit=2"
        page = await (await client.get(f"/v1/keys{query}", headers=admin)).get_json()
        assert len(page["items"]) <= 2
        seen += [key["id"] for key in page["items"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == 3, "five keys (the admin's and four) in pages of two"
    assert seen[1:] == made, "oldest first, each once"
    foreign = await client.get("/v1/keys?cursor=bm9wZQ", headers=admin)
    assert foreign.status_code == 400
    assert (await foreign.get_json())["error"]["code"] == "invalid_cursor"


@pytest.fixture
async def served(settings: GatewaySettings) -> AsyncIterator[ServedGateway]:
    async with serve_gateway(settings) as gateway:
        yield gateway


async def _cli(served: ServedGateway, key: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "FERRUMDECK_URL": served.url,
        "FERRUMDECK_API_KEY": key,
        "FERRUMDECK_ENV_FILE": "",
    }
    return await asyncio.to_thread(
        subprocess.run,
        [*COMMAND, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def test_the_cli_lists_and_revokes_keys(
    served: ServedGateway, client: Client, project_admin: str
) -> None:
    admin = _bearer(project_admin)
    for name in ("alpha", "beta", "gamma"):
        await client.post("/v1/keys", json={"name": name, "role": "operator"}, headers=admin)

    listed = await _cli(served, project_admin, "keys", "list")
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert lines[0].split() == ["ID", "NAME", "ROLE", "CREATED", "REVOKED"]
    assert [line.split()[1] for line in lines[1:]] == ["keys-admin", "alpha", "beta", "gamma"]

    first_two = await _cli(served, project_admin, "keys", "list", "--limit", "2", "--json")
    page = json.loads(first_two.stdout)
    assert [k["name"] for k in page["items"]] == ["keys-admin", "alpha"]
    rest = await _cli(served, project_admin, "keys", "list", "--cursor", page["next_cursor"])
    assert [line.split()[1] for line in rest.stdout.splitlines()[1:]] == ["beta", "gamma"]

    beta = next(
        k
        for k in json.loads((await _cli(served, project_admin, "keys", "list", "--json")).stdout)[
            "items"
        ]
        if k["name"] == "beta"
    )
    revoked = await _cli(served, project_admin, "keys", "revoke", beta["id"])
    assert revoked.returncode == 0, revoked.stderr
    assert f"revoked key {beta['id']}" in revoked.stdout
    after = json.loads((await _cli(served, project_admin, "keys", "list", "--json")).stdout)
    assert {k["name"]: k["revoked_at"] is not None for k in after["items"]}["beta"] is True

    missing = await _cli(served, project_admin, "keys", "revoke", str(uuid.uuid4()))
    assert missing.returncode == 2
    assert missing.stdout == ""
    assert len(missing.stderr.splitlines()) == 1
    assert missing.stderr.startswith("ferrumdeck keys revoke: no key ")
