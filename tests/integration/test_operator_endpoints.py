"""What the gateway shows outside key authentication, and what it takes from callers
into its logs: `/metrics` behind the operator's token when one is set, and request ids
only as bounded tokens."""

from __future__ import annotations

import pytest
from pydantic import SecretStr
from quart.typing import TestClientProtocol as Client

from services.gateway.app import create_app
from services.gateway.settings import GatewaySettings


async def test_metrics_need_the_token_when_the_operator_sets_one(
    settings: GatewaySettings,
) -> None:
    guarded = settings.model_copy(update={"metrics_token": SecretStr("scrape-secret")})
    async with create_app(guarded).test_app() as app:
        client = app.test_client()
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "scrape-secret"}):
            refused = await client.get("/metrics", headers=headers)
            assert refused.status_code == 401
            assert (await refused.get_json())["error"]["code"] == "unauthorized"
        scraped = await client.get("/metrics", headers={"Authorization": "Bearer scrape-secret"})
        assert scraped.status_code == 200
        assert "ferrumdeck_runs" in (await scraped.get_data(as_text=True))


async def test_metrics_stay_open_without_a_token(client: Client) -> None:
    assert (await client.get("/metrics")).status_code == 200


@pytest.mark.parametrize(
    ("given", "kept"),
    [
        ("req-1.a_B", True),
        ("x" * 128, True),
        ("x" * 129, False),
        ("a:b", False),
        ("line\\nbreak", False),
        ("<script>", False),
        ("", False),
    ],
)
async def test_a_request_id_is_kept_only_as_a_bounded_token(
    client: Client, given: str, kept: bool
) -> None:
    response = await client.get("/healthz", headers={"X-Request-Id": given})
    echoed = response.headers["X-Request-Id"]
    assert (echoed == given) is kept
    assert 1 <= len(echoed) <= 128
