"""PostgreSQL goes away under a running gateway and comes back: clients get clean 503s
with `Retry-After` meanwhile, and afterwards everything works again without restarting
the gateway — requests, the outbox relay, the audit chainer and the live event feed."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from services.client import CONNECTED, AsyncFerrumDeck, LiveEvent
from services.gateway.errors import outage
from services.gateway.settings import GatewaySettings
from testbed.streams import entries
from testbed.waiting import eventually
from tests.support.fault_proxy import FaultProxy
from tests.support.gateway_server import ServedGateway, serve_gateway


def _through(dsn: str, port: int) -> str:
    """`dsn` with its host and port replaced by the proxy's."""
    parts = urlsplit(dsn)
    netloc = parts.netloc.rsplit("@", 1)
    credentials = netloc[0] + "@" if len(netloc) == 2 else ""
    return urlunsplit(parts._replace(netloc=f"{credentials}127.0.0.1:{port}"))


@pytest.fixture
async def proxy(settings: GatewaySettings) -> AsyncIterator[FaultProxy]:
    upstream = urlsplit(settings.database_url)
    if upstream.hostname is None or upstream.port is None:
        pytest.skip("needs PostgreSQL over TCP to put a proxy in front of it")
    fault = FaultProxy(upstream.hostname, upstream.port)
    await fault.start()
    yield fault
    await fault.aclose()


@pytest.fixture
async def served(settings: GatewaySettings, proxy: FaultProxy) -> AsyncIterator[ServedGateway]:
    through_proxy = settings.model_copy(
        update={"database_url": _through(settings.database_url, proxy.port)}
    )
    async with serve_gateway(through_proxy) as gateway:
        yield gateway


@pytest.fixture
async def http(served: ServedGateway, admin_key: str) -> AsyncIterator[httpx.AsyncClient]:
    headers = {"Authorization": f"Bearer {admin_key}"}
    async with httpx.AsyncClient(base_url=served.url, headers=headers, timeout=20) as client:
        yield client


async def _agent(http: httpx.AsyncClient) -> str:
    name = f"outage-{uuid.uuid4().hex[:8]}"
    response = await http.post("/v1/agents", json={"name": name, "model": "scripted"})
    assert response.status_code == 201, response.text
    return name


def _unavailable(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    assert response.json()["error"]["code"] == "database_unavailable"
    assert 1 <= int(response.headers["Retry-After"]) <= 30


async def _published(redis: Redis, settings: GatewaySettings, run_id: str) -> bool:
    found = await entries(redis, settings.streams.runs)
    return any(fields[b"run_id"].decode() == run_id for _, fields in found)


async def _next(events: AsyncIterator[LiveEvent], name: str, run_id: str | None = None) -> None:
    async with asyncio.timeout(15):
        async for event in events:
            if event.name == name and (run_id is None or event.data.get("run_id") == run_id):
                return


async def test_clients_get_503_while_the_database_is_away_and_all_recovers_after(
    served: ServedGateway,
    proxy: FaultProxy,
    http: httpx.AsyncClient,
    admin_key: str,
    worker_key: str,
    redis: Redis,
    settings: GatewaySettings,
) -> None:
    agent = await _agent(http)
    before = (await http.post("/v1/runs", json={"agent": agent, "input": "before"})).json()
    await eventually(lambda: _published(redis, settings, before["id"]), bool)

    async with (
        AsyncFerrumDeck(served.url, admin_key) as deck,
        aclosing(deck.events(max_backoff=0.5)) as events,
    ):
        assert (await anext(events)).name == CONNECTED

        await proxy.cut()
        _unavailable(await http.post("/v1/runs", json={"agent": agent, "input": "during"}))
        _unavailable(await http.get("/v1/runs"))
        _unavailable(await http.get(f"/v1/runs/{before['id']}"))
        _unavailable(await http.get("/v1/runs", headers={"Authorization": "Bearer fd_unknown"}))
        _unavailable(
            await http.post(
                f"/v1/worker/runs/{before['id']}/claim",
                json={"worker_id": "w1"},
                headers={"Authorization": f"Bearer {worker_key}"},
            )
        )
        assert (await http.get("/readyz")).status_code == 503
        assert (await http.get("/healthz")).status_code == 200

        await proxy.restore()
        assert (await http.get("/readyz")).status_code == 200
        intact = (await http.get(f"/v1/runs/{before['id']}")).json()
        assert intact == before
        await _next(events, "resync")
        created = await http.post("/v1/runs", json={"agent": agent, "input": "after"})
        assert created.status_code == 202, created.text
        after = created.json()["id"]
        await _next(events, "run", after)
    await eventually(lambda: _published(redis, settings, after), bool)
    listed = (await http.get("/v1/runs", params={"agent": agent})).json()["items"]
    assert [r["input"] for r in listed] == ["after", "before"]
    verified = await eventually(
        lambda: _verify(http), lambda v: v["intact"] and v["unchained"] == 0
    )
    assert verified["events"] > 0


async def _verify(http: httpx.AsyncClient) -> dict[str, Any]:
    body: dict[str, Any] = (await http.get("/v1/audit/verify")).json()
    return body


@pytest.mark.parametrize(
    "error",
    [
        ConnectionRefusedError(111, "Connect call failed"),
        ConnectionResetError(104, "Connection reset by peer"),
        TimeoutError(),
        asyncpg.ConnectionDoesNotExistError("connection was closed in the middle of operation"),
        asyncpg.CannotConnectNowError("the database system is starting up"),
        asyncpg.AdminShutdownError("terminating connection due to administrator command"),
        asyncpg.TooManyConnectionsError("sorry, too many clients already"),
        asyncpg.InterfaceError("connection is closed"),
        asyncpg.InterfaceError("pool is closing"),
    ],
    ids=lambda error: type(error).__name__,
)
def test_every_way_of_losing_the_database_is_a_503(error: Exception) -> None:
    unavailable = outage(error)
    assert unavailable is not None
    assert (unavailable.status, unavailable.code) == (503, "database_unavailable")


def test_a_lost_redis_is_a_503_too() -> None:
    unavailable = outage(RedisConnectionError("Connection refused"))
    assert unavailable is not None
    assert (unavailable.status, unavailable.code) == (503, "redis_unavailable")


@pytest.mark.parametrize(
    "error",
    [
        asyncpg.InterfaceError("cannot perform operation: another operation is in progress"),
        asyncpg.UniqueViolationError("duplicate key value"),
        ValueError("a bug"),
    ],
    ids=lambda error: type(error).__name__,
)
def test_bugs_stay_500s(error: Exception) -> None:
    assert outage(error) is None
