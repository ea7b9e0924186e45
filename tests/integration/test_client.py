"""The Python client against a real gateway: typed answers, typed errors, paging."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import aclosing
from pathlib import Path

import asyncpg
import httpx
import pytest

from services.client import (
    AsyncFerrumDeck,
    ConfigError,
    Conflict,
    FerrumDeck,
    Forbidden,
    GatewayUnavailable,
    NotFound,
    Unauthorized,
    UnprocessableEntity,
    discover,
)
from services.contract.api import ApprovalStatus
from services.contract.errors import ErrorCode
from services.contract.policy import (
    ApprovalSettings,
    DistinctApprover,
    EvaluateRequest,
    PolicyRule,
    PolicySet,
)
from services.contract.runs import RunStatus
from services.devstack.embedded import free_port
from services.gateway.settings import GatewaySettings
from testbed.waiting import eventually
from tests.support.gateway_server import ServedGateway, serve_gateway
from tests.support.harness import ToolHarness


@pytest.fixture
async def served(settings: GatewaySettings) -> AsyncIterator[ServedGateway]:
    async with serve_gateway(settings) as gateway:
        yield gateway


async def test_runs_are_created_listed_by_page_and_cancelled(
    served: ServedGateway, harness: ToolHarness, admin_key: str
) -> None:
    agent = await harness.agent()
    async with AsyncFerrumDeck(served.url, admin_key) as deck:
        created = [await deck.create_run(agent, f"job {n}") for n in range(5)]
        page = await deck.runs(agent=agent, limit=2)
        assert len(page.items) == 2
        assert page.next_cursor is not None
        every = [run.id async for run in deck.iter_runs(agent=agent, page=2)]
        assert every == [run.id for run in reversed(created)]
        cancelled = await deck.cancel_run(created[0].id)
        assert cancelled.status is RunStatus.CANCELLED
        with pytest.raises(Conflict) as raised:
            await deck.cancel_run(created[0].id)
        assert raised.value.status == 409
        assert raised.value.code == "run_finished"
        with pytest.raises(NotFound):
            await deck.run(uuid.uuid4())
        with pytest.raises(UnprocessableEntity):
            await deck.create_run("no-such-agent", "hi")


async def test_approvals_and_policies(
    served: ServedGateway, harness: ToolHarness, admin_key: str
) -> None:
    async with AsyncFerrumDeck(served.url, admin_key) as deck:
        version = await deck.put_policies(
            [PolicyRule(id="ask", tool="notes.*", effect="require_approval")]
        )
        assert (await deck.policies()).version == version.version
        decision = await deck.evaluate(EvaluateRequest(agent="a", tool="notes.write_note"))
        assert decision.rule == "ask"
        run_id, epoch = await harness.running(tools=["notes.*"])
        await harness.authorize(run_id, epoch, 1, "notes.write_note", {"text": "x"})
        (pending,) = (await deck.approvals(status="pending", run_id=run_id)).items
        approved = await deck.approve(pending.id, "looks fine")
        assert approved.status is ApprovalStatus.APPROVED
        assert approved.reason == "looks fine"
        with pytest.raises(Conflict) as raised:
            await deck.reject(pending.id, "too late")
        assert raised.value.code == "approval_decided"


async def test_a_new_policy_comes_back_with_its_warnings_and_approval_settings(
    served: ServedGateway, harness: ToolHarness, admin_key: str
) -> None:
    server = f"w{uuid.uuid4().hex[:8]}"
    tool = {
        "name": f"{server}.add",
        "server": server,
        "tool": "add",
        "input_schema": {"type": "object", "properties": {"a": {"type": "string"}}},
    }
    reported = await harness.client.put(
        "/v1/worker/tools", json={"worker_id": server, "tools": [tool]}, headers=harness.worker
    )
    assert reported.status_code < 300
    policy = PolicySet(
        rules=[
            PolicyRule.model_validate(
                {"id": "big", "tool": f"{server}.add", "effect": "deny",
                 "when": {"args": {"a": {"gt": 100}}}}
            ),
            PolicyRule(id="ask", tool="notes.*", effect="require_approval"),
        ],
        approvals=ApprovalSettings(distinct_approver=DistinctApprover.KEY),
    )  # fmt: skip
    async with AsyncFerrumDeck(served.url, admin_key) as deck:
        written = await deck.put_policies(policy)
        (warning,) = written.warnings
        assert warning.startswith("rules[0] (big)")
        assert written.approvals.distinct_approver is DistinctApprover.KEY
        assert (await deck.policies()).approvals == policy.approvals

        run_id, epoch = await harness.running(tools=["notes.*"])  # started by this key
        await harness.authorize(run_id, epoch, 1, "notes.write_note", {"text": "x"})
        (pending,) = (await deck.approvals(status="pending", run_id=run_id)).items
        with pytest.raises(Forbidden) as raised:
            await deck.approve(pending.id, "my own")
        assert raised.value.code == ErrorCode.SEPARATION_OF_DUTIES
        assert (await deck.approval(pending.id)).status is ApprovalStatus.PENDING


async def test_bad_key_and_no_gateway(served: ServedGateway) -> None:
    async with AsyncFerrumDeck(served.url, "fd_wrong") as deck:
        with pytest.raises(Unauthorized):
            await deck.runs()
    async with AsyncFerrumDeck(f"http://127.0.0.1:{free_port()}", "fd_x") as deck:
        with pytest.raises(GatewayUnavailable):
            await deck.queue()


async def test_requests_abandoned_under_contention_never_exhaust_the_pool(
    served: ServedGateway, harness: ToolHarness, admin_key: str
) -> None:
    """A caller that stops waiting (a deck worker replaced by a newer one) must not take
    a pool slot with it: httpcore leaks one when a request is cancelled while queued for
    a connection (encode/httpcore#1093), and once all are gone every call fails."""
    run_id = await harness.run()
    transport = httpx.AsyncHTTPTransport(limits=httpx.Limits(max_connections=4))
    async with AsyncFerrumDeck(served.url, admin_key, transport=transport, timeout=3) as deck:
        for round in range(100):
            calls = [asyncio.create_task(deck.run(run_id)) for _ in range(12)]
            await asyncio.sleep((round % 10) / 1000)
            for call in calls:
                call.cancel()
            await asyncio.gather(*calls, return_exceptions=True)
        assert str((await deck.run(run_id)).id) == run_id


async def test_an_unreachable_gateway_is_explained_by_its_cause(
    served: ServedGateway, admin_key: str
) -> None:
    """httpx's timeouts carry no message; the error still says which one it was."""
    transport = httpx.AsyncHTTPTransport(limits=httpx.Limits(max_connections=1))
    async with (
        AsyncFerrumDeck(served.url, admin_key, transport=transport, timeout=0.3) as deck,
        aclosing(deck.events()) as events,
    ):
        await anext(events)  # the feed holds the only connection
        with pytest.raises(GatewayUnavailable) as raised:
            await deck.queue()
    assert str(raised.value).endswith(f"{served.url}: PoolTimeout"), str(raised.value)


async def test_the_sync_client_behaves_the_same(
    served: ServedGateway, harness: ToolHarness, admin_key: str
) -> None:
    agent = await harness.agent()

    def use() -> list[str]:
        with FerrumDeck(served.url, admin_key) as deck:
            run = deck.create_run(agent, "from a script")
            assert deck.run(run.id).input == "from a script"
            assert (deck.queue().stream or "").endswith(":runs")
            return [r.agent for r in deck.iter_runs(agent=agent)]

    assert await asyncio.to_thread(use) == [agent]


def test_configuration_is_found_in_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FERRUMDECK_URL", raising=False)
    monkeypatch.delenv("FERRUMDECK_API_KEY", raising=False)
    with pytest.raises(ConfigError):
        discover(cwd=tmp_path)
    (tmp_path / ".ferrumdeck").mkdir()
    (tmp_path / ".ferrumdeck" / "dev.env").write_text(
        "FERRUMDECK_URL=http://dev:1\nFERRUMDECK_API_KEY=fd_dev\n"
    )
    assert discover(cwd=tmp_path) == discover("http://dev:1", "fd_dev")
    monkeypatch.setenv("FERRUMDECK_API_KEY", "fd_env")
    assert discover(cwd=tmp_path).api_key == "fd_env"
    assert discover(api_key="fd_arg", cwd=tmp_path).api_key == "fd_arg"
    assert discover(url="http://arg:2/", cwd=tmp_path).url == "http://arg:2"


async def test_wait_returns_a_run_that_ended_before_it_was_called(
    served: ServedGateway, harness: ToolHarness, admin_key: str
) -> None:
    """A run whose end came before the caller subscribed is not waited for forever."""
    async with AsyncFerrumDeck(served.url, admin_key) as deck:
        run = await deck.create_run(await harness.agent(), "over at once")
        await deck.cancel_run(run.id)
        async with asyncio.timeout(10):
            ended = await deck.wait(run.id)
    assert ended.status is RunStatus.CANCELLED


async def test_follow_sees_the_run_through_an_approval_to_its_end(
    served: ServedGateway, harness: ToolHarness, admin_key: str
) -> None:
    await harness.policy({"id": "ask", "tool": "notes.*", "effect": "require_approval"})
    run_id, epoch = await harness.running(tools=["notes.*"])
    async with AsyncFerrumDeck(served.url, admin_key) as deck:
        seen: list[RunStatus] = []

        async def follow() -> None:
            async for run in deck.follow(run_id):
                seen.append(run.status)

        following = asyncio.create_task(follow())
        await eventually(lambda: _async(seen), lambda statuses: RunStatus.RUNNING in statuses)
        await harness.authorize(run_id, epoch, 1, "notes.write_note", {"text": "hi"})
        await eventually(
            lambda: _async(seen), lambda statuses: RunStatus.WAITING_APPROVAL in statuses
        )
        (approval,) = await harness.approvals(run_id=run_id)
        await harness.decide(approval["id"], "approve")
        status, grant = await harness.claim(run_id)
        assert status == 200, grant
        await harness.call(run_id, "complete", {"epoch": grant["epoch"], "output": "done"})
        await asyncio.wait_for(following, timeout=10)
    assert seen[-1] is RunStatus.COMPLETED
    assert seen.count(RunStatus.COMPLETED) == 1


async def test_the_sync_wait_gives_up_after_its_timeout(
    served: ServedGateway, harness: ToolHarness, admin_key: str
) -> None:
    agent = await harness.agent()

    def use() -> RunStatus:
        with FerrumDeck(served.url, admin_key) as deck:
            run = deck.create_run(agent, "nobody works on this")
            with pytest.raises(TimeoutError):
                deck.wait(run.id, timeout=0.5)
            deck.cancel_run(run.id)
            return deck.wait(run.id, timeout=10).status

    assert await asyncio.to_thread(use) is RunStatus.CANCELLED


async def _async(value: list[RunStatus]) -> list[RunStatus]:
    return list(value)


async def test_a_conversation_through_the_client_waits_for_each_answer(
    served: ServedGateway, harness: ToolHarness, admin_key: str, db: asyncpg.Pool
) -> None:
    agent = await harness.agent()

    async def answer(text: str) -> None:
        async def opened() -> list[str]:
            rows = await db.fetch(
                "SELECT id FROM runs WHERE agent_name = $1 AND status = 'queued'", agent
            )
            return [str(row["id"]) for row in rows]

        (run_id,) = await eventually(opened, lambda ids: len(ids) == 1)
        _, grant = await harness.claim(run_id)
        reply = {"message": {"role": "assistant", "content": text}}
        await harness.step(run_id, grant["epoch"], 1, output=reply, final_output=text)

    async with AsyncFerrumDeck(served.url, admin_key) as deck:
        thread = await deck.create_thread({"user": "u1"})
        outputs = []
        for question, reply in (("hi", "hello"), ("again?", "yes")):
            answering = asyncio.create_task(answer(reply))
            run = await deck.create_run(agent, question, thread_id=thread.id, wait=30)
            await answering
            assert (run.status, run.thread_id) == (RunStatus.COMPLETED, thread.id)
            outputs.append(run.output)
        assert outputs == ["hello", "yes"]
        said = [m.message["content"] async for m in deck.iter_thread_messages(thread.id)]
        assert said == ["hi", "hello", "again?", "yes"]
        assert (await deck.thread(thread.id)).runs == 2
        looked = await deck.create_run(
            agent, messages=[{"role": "user", "content": "look"}], wait=0
        )
        assert (looked.status, looked.messages) == (
            RunStatus.QUEUED,
            [{"role": "user", "content": "look"}],
        )
