"""Group commit of `POST /v1/runs`: many requests at once are written together, and each
still gets exactly what it would have got alone — its own run, job and audit event, the
idempotency rules as if the requests came one after another, and its own errors."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from quart.typing import TestClientProtocol as Client
from redis.asyncio import Redis
from werkzeug.datastructures import Headers

from services.contract.api import Agent, AgentCreate, RunCreate
from services.gateway.audit import Actor
from services.gateway.db.connections import create_pool
from services.gateway.errors import Conflict, ServiceUnavailable
from services.gateway.run_intake import RunIntake
from services.gateway.settings import GatewaySettings
from services.gateway.store.agents import create_version
from services.gateway.store.runs import NewRun, create_runs
from testbed.streams import entries
from testbed.waiting import eventually
from tests.support.sealing import SEAL

TESTER = Actor.system("intake test")


async def _unpublished(db: asyncpg.Pool, agent: str) -> int:
    return int(
        await db.fetchval(
            """SELECT count(*) FROM outbox o JOIN runs r ON r.id = o.run_id
                WHERE r.agent_name = $1""",
            agent,
        )
    )


@pytest.fixture
async def agent(client: Client, admin: dict[str, str], db: asyncpg.Pool) -> AsyncIterator[str]:
    name = f"intake-{uuid.uuid4().hex[:8]}"
    response = await client.post(
        "/v1/agents", json={"name": name, "model": "scripted"}, headers=admin
    )
    assert response.status_code == 201
    yield name
    # Every job reaches this test's stream; none is left for the next test's relay.
    await eventually(lambda: _unpublished(db, name), lambda left: left == 0)


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    own = await create_pool(database_url, min_size=1, max_size=4, seal=SEAL)
    yield own
    await own.close()


@pytest.fixture
async def stored_agent(pool: asyncpg.Pool) -> AsyncIterator[Agent]:
    """An agent for tests that write runs without a gateway: no relay publishes their
    jobs, so they are removed afterwards (the database is shared with later tests)."""
    async with pool.acquire() as conn:
        agent = await create_version(
            conn,
            "default",
            AgentCreate(name=f"intake-{uuid.uuid4().hex[:8]}", model="scripted"),
            TESTER,
        )
    yield agent
    await pool.execute(
        "DELETE FROM outbox WHERE run_id IN (SELECT id FROM runs WHERE agent_name = $1)",
        agent.name,
    )


def _new(
    agent: Agent, text: str = "hello", *, key: str | None = None, request_id: str | None = None
) -> NewRun:
    return NewRun(
        project="default",
        agent=agent,
        body=RunCreate(agent=agent.name, input=text),
        idempotency_key=key,
        request_hash=None if key is None else f"hash of {text}",
        actor=TESTER,
        request_id=request_id,
    )


async def _post(
    client: Client, admin: dict[str, str], body: dict[str, Any], **headers: str
) -> tuple[int, dict[str, Any], Headers]:
    response = await client.post("/v1/runs", json=body, headers={**admin, **headers})
    return response.status_code, await response.get_json(), response.headers


async def _published(redis: Redis, settings: GatewaySettings) -> Counter[str]:
    found = await entries(redis, settings.streams.runs)
    return Counter(fields[b"run_id"].decode() for _, fields in found)


async def _created_events(db: asyncpg.Pool, run_ids: list[str]) -> list[asyncpg.Record]:
    return list(
        await db.fetch(
            """SELECT target, request_id, actor FROM audit_events
                WHERE action = 'run.created' AND target = ANY($1::text[])""",
            [f"run:{run_id}" for run_id in run_ids],
        )
    )


async def test_a_burst_of_runs_gets_one_run_one_job_and_one_event_each(
    client: Client,
    admin: dict[str, str],
    agent: str,
    db: asyncpg.Pool,
    redis: Redis,
    settings: GatewaySettings,
) -> None:
    answers = await asyncio.gather(
        *(
            _post(
                client,
                admin,
                {"agent": agent, "input": f"job {n}", "metadata": {"n": n}},
                **{"X-Request-Id": f"burst-{n}"},
            )
            for n in range(200)
        )
    )
    assert [status for status, _, _ in answers] == [202] * 200
    runs = [run for _, run, _ in answers]
    assert all("Idempotent-Replayed" not in headers for _, _, headers in answers)
    assert [run["input"] for run in runs] == [f"job {n}" for n in range(200)]
    assert [run["metadata"] for run in runs] == [{"n": n} for n in range(200)]
    ids = [run["id"] for run in runs]
    assert len(set(ids)) == 200

    stored = await db.fetch(
        "SELECT id::text, input FROM runs WHERE agent_name = $1 AND status = 'queued'", agent
    )
    assert {(row["id"], row["input"]) for row in stored} == {
        (run["id"], run["input"]) for run in runs
    }
    events = await _created_events(db, ids)
    assert sorted((e["target"], e["request_id"]) for e in events) == sorted(
        (f"run:{run_id}", f"burst-{n}") for n, run_id in enumerate(ids)
    )
    assert all(e["actor"].startswith("test-admin (") for e in events)
    published = await eventually(
        lambda: _published(redis, settings), lambda seen: set(ids) <= set(seen)
    )
    await asyncio.sleep(0.3)  # a duplicate would come with the next relay round
    published = await _published(redis, settings)
    assert all(published[run_id] == 1 for run_id in ids)


async def test_a_burst_with_one_idempotency_key_makes_one_run(
    client: Client,
    admin: dict[str, str],
    agent: str,
    db: asyncpg.Pool,
    redis: Redis,
    settings: GatewaySettings,
) -> None:
    key = f"burst-{uuid.uuid4()}"
    body = {"agent": agent, "input": "only once"}
    answers = await asyncio.gather(
        *(_post(client, admin, body, **{"Idempotency-Key": key}) for _ in range(30))
    )
    assert {status for status, _, _ in answers} == {202}
    assert len({run["id"] for _, run, _ in answers}) == 1
    replayed = [headers.get("Idempotent-Replayed") for _, _, headers in answers]
    assert replayed.count(None) == 1
    assert replayed.count("true") == 29
    run_id = answers[0][1]["id"]
    assert await db.fetchval("SELECT count(*) FROM runs WHERE agent_name = $1", agent) == 1
    assert len(await _created_events(db, [run_id])) == 1
    await eventually(lambda: _published(redis, settings), lambda seen: run_id in seen)
    await asyncio.sleep(0.3)
    assert (await _published(redis, settings))[run_id] == 1


async def test_one_key_with_two_bodies_in_a_burst_keeps_the_first_and_refuses_the_other(
    client: Client, admin: dict[str, str], agent: str, db: asyncpg.Pool
) -> None:
    key = f"burst-{uuid.uuid4()}"
    bodies = [{"agent": agent, "input": "one" if n % 2 else "two"} for n in range(40)]
    answers = await asyncio.gather(
        *(_post(client, admin, body, **{"Idempotency-Key": key}) for body in bodies)
    )
    (stored,) = await db.fetch("SELECT id::text, input FROM runs WHERE agent_name = $1", agent)
    for body, (status, answer, _) in zip(bodies, answers, strict=True):
        if body["input"] == stored["input"]:
            assert status == 202
            assert answer["id"] == stored["id"]
        else:
            assert status == 409
            assert answer["error"]["code"] == "idempotency_key_reused"
    created = [h for s, _, h in answers if s == 202 and "Idempotent-Replayed" not in h]
    assert len(created) == 1


async def test_a_request_that_cannot_be_stored_is_refused_alone(
    client: Client, admin: dict[str, str], agent: str, db: asyncpg.Pool
) -> None:
    """PostgreSQL refuses a NUL character in text: the request carrying one is told so,
    and does not take the requests sent with it down too (the batch fallback itself is
    proven on the store below)."""
    bad = {"agent": agent, "input": "nul \x00 here"}
    alone_status, alone_body, _ = await _post(client, admin, bad)
    assert alone_status == 400
    assert alone_body["error"]["code"] == "nul_character"

    bodies = [{"agent": agent, "input": f"fine {n}"} for n in range(40)]
    bodies.insert(20, bad)
    answers = await asyncio.gather(*(_post(client, admin, body) for body in bodies))
    for body, (status, answer, _) in zip(bodies, answers, strict=True):
        if body is bad:
            assert (status, answer) == (alone_status, alone_body)
        else:
            assert status == 202
            assert answer["input"] == body["input"]
    stored = await db.fetch("SELECT input FROM runs WHERE agent_name = $1", agent)
    assert sorted(row["input"] for row in stored) == sorted(f"fine {n}" for n in range(40))


async def test_keys_in_one_batch_behave_as_if_written_one_after_another(
    pool: asyncpg.Pool, stored_agent: Agent
) -> None:
    taken = f"k-{uuid.uuid4()}"
    fresh = f"k-{uuid.uuid4()}"
    async with pool.acquire() as conn:
        [first] = await create_runs(conn, [_new(stored_agent, "a", key=taken)])
        assert isinstance(first, tuple)
        earlier, created = first
        assert created
        outcomes = await create_runs(
            conn,
            [
                _new(stored_agent, "b", key=fresh),  # creates
                _new(stored_agent, "a", key=taken),  # replays the earlier run
                _new(stored_agent, "b", key=fresh),  # replays the one just created
                _new(stored_agent, "c", key=fresh),  # same key, other body: 409
                _new(stored_agent, "c", key=taken),  # 409 against the earlier run
                _new(stored_agent, "d"),  # no key: a run of its own
            ],
        )
    made, replay_earlier, replay_made, other_body, other_taken, unkeyed = outcomes
    assert isinstance(made, tuple)
    assert made[1] is True
    assert made[0].input == "b"
    assert replay_earlier == (earlier, False)
    assert replay_made == (made[0], False)
    assert isinstance(other_body, Conflict)
    assert other_body.code == "idempotency_key_reused"
    assert isinstance(other_taken, Conflict)
    assert isinstance(unkeyed, tuple)
    assert unkeyed[1] is True
    runs = await pool.fetchval("SELECT count(*) FROM runs WHERE agent_name = $1", stored_agent.name)
    assert runs == 3


async def test_a_failed_batch_is_written_again_one_by_one(
    pool: asyncpg.Pool, stored_agent: Agent
) -> None:
    """Submitted in one go, these share a batch; the bad one fails, with its own error."""
    intake = RunIntake(pool, in_flight=1)
    news = [_new(stored_agent, f"ok {n}", request_id=f"req-{n}") for n in range(10)]
    news.insert(5, _new(stored_agent, "bad \x00"))
    results = await asyncio.gather(*(intake.submit(new) for new in news), return_exceptions=True)
    await intake.close()
    assert isinstance(results[5], asyncpg.DataError)
    fine = [r for n, r in enumerate(results) if n != 5]
    assert all(isinstance(r, tuple) and r[1] for r in fine)
    events = await pool.fetch(
        """SELECT e.request_id, r.input FROM audit_events e
             JOIN runs r ON e.target = 'run:' || r.id
            WHERE e.action = 'run.created' AND r.agent_name = $1""",
        stored_agent.name,
    )
    assert sorted((e["request_id"], e["input"]) for e in events) == sorted(
        (f"req-{n}", f"ok {n}") for n in range(10)
    )


async def test_a_full_queue_makes_requests_wait_never_drops_them(
    pool: asyncpg.Pool, stored_agent: Agent
) -> None:
    intake = RunIntake(pool, batch_max=3, in_flight=1, queue_max=2)
    results = await asyncio.gather(
        *(intake.submit(_new(stored_agent, f"n {n}")) for n in range(25))
    )
    await intake.close()
    assert [run.input for run, created in results if created] == [f"n {n}" for n in range(25)]
    assert (
        await pool.fetchval("SELECT count(*) FROM runs WHERE agent_name = $1", stored_agent.name)
        == 25
    )


async def test_closing_writes_what_is_queued_and_refuses_what_comes_after(
    pool: asyncpg.Pool, stored_agent: Agent
) -> None:
    intake = RunIntake(pool, batch_max=8, in_flight=1)
    pending = [asyncio.create_task(intake.submit(_new(stored_agent, f"q {n}"))) for n in range(50)]
    await asyncio.sleep(0)  # all queued, the first batch being written
    await intake.close()
    assert all(task.done() for task in pending)
    written = {(await task)[0].input for task in pending}
    assert written == {f"q {n}" for n in range(50)}
    with pytest.raises(ServiceUnavailable):
        await intake.submit(_new(stored_agent, "too late"))


async def test_closing_fails_a_request_that_cannot_be_written_in_time(
    pool: asyncpg.Pool, stored_agent: Agent, database_url: str
) -> None:
    """A write stuck behind another transaction's lock on its idempotency key is given
    up at shutdown with a 503: the client may retry, and nothing waits forever."""
    key = f"held-{uuid.uuid4()}"
    blocker = await asyncpg.connect(database_url)
    try:
        holding = blocker.transaction()
        await holding.start()
        await blocker.execute(
            """INSERT INTO runs (project, id, agent_name, agent_version, status, input,
                                 idempotency_key, request_hash)
               VALUES ('default', $1, $2, $3, 'queued', 'held', $4, 'h')""",
            uuid.uuid4(),
            stored_agent.name,
            stored_agent.version,
            key,
        )
        intake = RunIntake(pool, close_seconds=0.3)
        stuck = asyncio.create_task(intake.submit(_new(stored_agent, "mine", key=key)))
        await asyncio.sleep(0.2)
        assert not stuck.done()
        async with asyncio.timeout(5):
            await intake.close()
        with pytest.raises(ServiceUnavailable) as refused:
            await stuck
        assert refused.value.status == 503
        await holding.rollback()
    finally:
        await blocker.close()
