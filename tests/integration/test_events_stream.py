"""`GET /v1/events` over real HTTP: what operators' screens are driven by."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing
from types import SimpleNamespace
from typing import cast

import asyncpg
import httpx
import pytest
from redis.asyncio import Redis

from services.client import CONNECTED, DISCONNECTED, AsyncFerrumDeck, LiveEvent, Unauthorized
from services.contract.api import Role
from services.contract.events import PROJECT_EVENTS, EventName, RunChanged
from services.contract.runs import RunStatus
from services.gateway.audit import Actor
from services.gateway.events import RESYNC, Event, EventHub
from services.gateway.notification_listener import APPLICATION_NAME
from services.gateway.principal import Principal
from services.gateway.settings import GatewaySettings
from services.gateway.store.keys import create_key
from testbed.waiting import eventually
from tests.support.gateway_server import ServedGateway, serve_gateway
from tests.support.harness import ToolHarness, usage


@pytest.fixture
async def served(settings: GatewaySettings) -> AsyncIterator[ServedGateway]:
    async with serve_gateway(settings) as gateway:
        yield gateway


async def until(
    events: AsyncIterator[LiveEvent], accept: Callable[[LiveEvent], bool], within: float = 10
) -> list[LiveEvent]:
    """Events up to and including the first `accept` likes."""
    seen: list[LiveEvent] = []
    async with asyncio.timeout(within):
        async for event in events:
            seen.append(event)
            if accept(event):
                return seen
    raise AssertionError(f"stream ended; saw {seen}")


async def until_all(
    events: AsyncIterator[LiveEvent], run_id: str, wanted: set[tuple[str, str]]
) -> list[LiveEvent]:
    """This run's events until each (name, status) in `wanted` was seen."""
    missing = set(wanted)
    mine: list[LiveEvent] = []

    def done(event: LiveEvent) -> bool:
        if event.data.get("run_id") == run_id:
            mine.append(event)
            missing.discard((event.name, str(event.data.get("status"))))
        return not missing

    await until(events, done)
    return mine


async def test_run_step_and_approval_changes_are_announced(
    served: ServedGateway, harness: ToolHarness, admin_key: str
) -> None:
    async with AsyncFerrumDeck(served.url, admin_key) as deck, aclosing(deck.events()) as events:
        assert (await anext(events)).name == CONNECTED
        await harness.policy({"id": "ask", "tool": "notes.*", "effect": "require_approval"})
        run_id, epoch = await harness.running(tools=["notes.*"])
        status, _ = await harness.authorize(
            run_id, epoch, 1, "notes.write_note", {"text": "secret"}
        )
        assert status == 200
        seen = await until_all(
            events, run_id, {("run", "waiting_approval"), ("approval", "pending")}
        )
        mine = [(e.name, e.data) for e in seen]
        runs = [d["status"] for n, d in mine if n == "run"]
        assert [s for i, s in enumerate(runs) if i == 0 or runs[i - 1] != s] == [
            "queued",
            "running",
            "waiting_approval",
        ]
        steps = [d for n, d in mine if n == "step"]
        assert [(s["seq"], s["kind"], s["status"], s["tool"]) for s in steps] == [
            (1, "tool_call", "waiting_approval", "notes.write_note")
        ]
        approval = next(d for n, d in mine if n == "approval")
        assert approval["status"] == "pending"
        assert approval["tool"] == "notes.write_note"
        assert "secret" not in str(seen), "payloads carry states, never arguments"

        status, _ = await harness.decide(approval["approval_id"], "approve")
        assert status == 200
        await until_all(
            events, run_id, {("approval", "approved"), ("step", "approved"), ("run", "queued")}
        )


async def test_the_triggers_send_exactly_what_the_contract_names(
    served: ServedGateway, harness: ToolHarness, admin_key: str
) -> None:
    """The SQL triggers build their payloads by hand; a key renamed or dropped there
    would reach every deck as a missing field, so each is held to its contract model."""
    async with AsyncFerrumDeck(served.url, admin_key) as deck, aclosing(deck.events()) as events:
        assert (await anext(events)).name == CONNECTED
        await harness.policy({"id": "ask", "tool": "notes.*", "effect": "require_approval"})
        run_id, epoch = await harness.running(tools=["notes.*"])
        await harness.authorize(run_id, epoch, 1, "notes.write_note", {"text": "x"})
        seen = await until_all(
            events, run_id, {("run", "waiting_approval"), ("approval", "pending")}
        )
    names = {event.name for event in seen}
    assert names == set(PROJECT_EVENTS), names
    for event in seen:
        model = PROJECT_EVENTS[EventName(event.name)]
        assert isinstance(event.payload, model), event
        assert set(event.data) - {"type"} == set(model.model_fields), event.data
        assert event.data["type"] == event.name


async def test_a_run_event_carries_what_a_list_row_shows(
    served: ServedGateway, harness: ToolHarness, admin_key: str
) -> None:
    """Steps, tokens, cost and times, so a deck follows a burst without a fetch per event."""
    async with AsyncFerrumDeck(served.url, admin_key) as deck, aclosing(deck.events()) as events:
        assert (await anext(events)).name == CONNECTED
        run_id, epoch = await harness.running()
        status, _ = await harness.step(run_id, epoch, 1, usage=usage(100, 20, 0.001))
        assert status == 200, _
        seen = await until(
            events,
            lambda e: (
                isinstance(e.payload, RunChanged)
                and str(e.payload.run_id) == run_id
                and e.payload.steps == 1
            ),
        )
        run = await deck.run(run_id)
    change = seen[-1].payload
    assert isinstance(change, RunChanged)
    assert (change.agent_version, change.status) == (run.agent_version, RunStatus.RUNNING)
    assert (change.prompt_tokens, change.completion_tokens) == (100, 20)
    assert change.cost_usd == pytest.approx(0.001)
    assert (change.created_at, change.started_at) == (run.created_at, run.started_at)
    assert change.finished_at is None


async def test_queue_statistics_every_second(served: ServedGateway, admin_key: str) -> None:
    async with AsyncFerrumDeck(served.url, admin_key) as deck, aclosing(deck.events()) as events:
        queue = (await until(events, lambda e: e.name == "queue", within=5))[-1]
        assert set(queue.data) == {
            "stream",
            "group",
            "depth",
            "pending",
            "lag",
            "oldest_pending_seconds",
            "consumers",
            "dead_letter",
            "waiting",
            "project",
            "running",
            "quota",
            "max_lag",
            "max_oldest_pending_seconds",
            "accepting_runs",
        }
        assert queue.data["accepting_runs"] is True
        assert queue.data["max_lag"] == 10_000
        loop = asyncio.get_running_loop()
        started = loop.time()
        await until(events, lambda e: e.name == "queue", within=3)
        assert loop.time() - started < 2


async def test_a_lost_listener_reconnects_and_clients_resync(
    served: ServedGateway, harness: ToolHarness, admin_key: str, db: asyncpg.Pool
) -> None:
    async with AsyncFerrumDeck(served.url, admin_key) as deck, aclosing(deck.events()) as events:
        assert (await anext(events)).name == CONNECTED
        killed = await db.fetchval(
            """SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
                WHERE datname = current_database() AND application_name = $1""",
            APPLICATION_NAME,
        )
        assert killed >= 1
        await until(events, lambda e: e.name == "resync")
        run_id = await harness.run()
        await until(events, lambda e: e.name == "run" and e.data["run_id"] == run_id)


async def test_heartbeats_keep_a_quiet_stream_open(served: ServedGateway, admin_key: str) -> None:
    served.hub.heartbeat_seconds = 0.2
    headers = {"Authorization": f"Bearer {admin_key}"}
    async with (
        httpx.AsyncClient(base_url=served.url, headers=headers) as http,
        http.stream("GET", "/v1/events") as response,
    ):
        assert response.headers["content-type"].startswith("text/event-stream")
        async with asyncio.timeout(5):
            async for line in response.aiter_lines():
                if line == ": heartbeat":
                    break


async def test_clients_that_leave_are_forgotten(served: ServedGateway, admin_key: str) -> None:
    async with AsyncFerrumDeck(served.url, admin_key) as deck, aclosing(deck.events()) as events:
        assert (await anext(events)).name == CONNECTED
        assert served.hub.subscribers == 1
        await events.aclose()
    await eventually(lambda: _subscribers(served), lambda n: n == 0)


async def _subscribers(served: ServedGateway) -> int:
    return served.hub.subscribers


async def test_stopping_the_hub_ends_every_stream(served: ServedGateway, admin_key: str) -> None:
    async with AsyncFerrumDeck(served.url, admin_key) as deck, aclosing(deck.events()) as events:
        assert (await anext(events)).name == CONNECTED
        await served.hub.stop()
        assert (await until(events, lambda e: e.name == DISCONNECTED))[-1].name == DISCONNECTED


async def test_a_bad_key_is_refused(served: ServedGateway) -> None:
    async with AsyncFerrumDeck(served.url, "fd_not-a-key") as deck:
        with pytest.raises(Unauthorized):
            await anext(deck.events())


async def test_a_slow_client_is_told_to_resync_and_never_blocks_others(
    redis: Redis, settings: GatewaySettings
) -> None:
    hub = EventHub(settings.database_url, redis, settings.streams, buffer=3)
    someone = cast(Principal, SimpleNamespace(name="operator", project="p"))
    fast, slow = hub.subscribe(someone), hub.subscribe(someone)
    received = []
    for n in range(5):
        hub.broadcast(Event("run", {"n": n, "project": "p"}))
        received.append(await fast.next(1))
    assert [e.data["n"] for e in received if e is not None] == [0, 1, 2, 3, 4]
    assert await slow.next(1) is RESYNC
    assert (await slow.next(1)) == Event("run", {"n": 4, "project": "p"})
    assert await slow.next(0.05) is None


async def test_a_key_sees_only_its_own_projects_changes(
    served: ServedGateway, harness: ToolHarness, admin_key: str, db: asyncpg.Pool
) -> None:
    async with db.acquire() as conn:
        _, outsider = await create_key(
            conn, "events-outsider", Role.VIEWER, "events-elsewhere", Actor.system("tests")
        )
    async with (
        AsyncFerrumDeck(served.url, admin_key) as mine,
        AsyncFerrumDeck(served.url, outsider) as theirs,
        aclosing(mine.events()) as own_events,
        aclosing(theirs.events()) as other_events,
    ):
        assert (await anext(own_events)).name == CONNECTED
        assert (await anext(other_events)).name == CONNECTED
        run_id = await harness.run()
        await until(own_events, lambda e: e.name == "run" and e.data.get("run_id") == run_id)
        seen = await until(other_events, lambda e: e.name == "queue", within=5)
        seen += await until(other_events, lambda e: e.name == "queue", within=5)
        assert all(e.name not in {"run", "step", "approval"} for e in seen)
