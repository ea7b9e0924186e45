"""Operators driving the deck against a real gateway, with data seeded through the API."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from textual.coordinate import Coordinate
from textual.widgets import DataTable, Input, Static

from services.client import AsyncFerrumDeck
from services.contract.api import ApprovalStatus
from services.contract.runs import RunStatus
from services.devstack.embedded import free_port
from services.gateway.settings import GatewaySettings
from tests.support.gateway_server import serve_gateway
from tests.support.harness import ToolHarness, usage
from tests.tui.conftest import notifications, text_of, until
from tui.app import FerrumDeckApp
from tui.screens.help import HelpScreen
from tui.screens.modals import ConfirmScreen, ReasonScreen
from tui.widgets.run_list import RunList

SIZE = (140, 40)
Deck = Callable[..., FerrumDeckApp]


def table(app: FerrumDeckApp, selector: str) -> DataTable[object]:
    return app.screen.query_one(selector, DataTable)


def runs_list(app: FerrumDeckApp) -> RunList:
    return app.screen.query_one("#runs", RunList)


def static(app: FerrumDeckApp, selector: str) -> str:
    return text_of(app.screen.query_one(selector, Static))


def row_keys(app: FerrumDeckApp, selector: str) -> list[str]:
    if selector == "#runs":
        return runs_list(app).run_ids()
    found = table(app, selector)
    return [
        str(found.coordinate_to_cell_key(Coordinate(i, 0)).row_key.value)
        for i in range(found.row_count)
    ]


async def parked_call(harness: ToolHarness, agent: str, text: str) -> str:
    """A run of `agent` waiting for a human to decide its notes.write_note call."""
    response = await harness.client.post(
        "/v1/runs", json={"agent": agent, "input": text}, headers=harness.admin
    )
    run_id = str((await response.get_json())["id"])
    status, grant = await harness.claim(run_id)
    assert status == 200, grant
    status, verdict = await harness.authorize(
        run_id, grant["epoch"], 1, "notes.write_note", {"text": text}
    )
    assert status == 200, verdict
    assert verdict["verdict"] == "parked", verdict
    return run_id


async def test_every_screen_is_reachable_by_key(deck: Deck) -> None:
    app = deck()
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.connection == "live")
        await until(pilot, lambda: "depth" in static(app, "#queue-numbers"))
        for key, mode in [("2", "runs"), ("3", "detail"), ("4", "approvals"), ("5", "audit")]:
            await pilot.press(key)
            assert app.current_mode == mode
            if mode == "detail":
                assert "No run selected" in static(app, "#run-summary")
        await pilot.press("1")
        assert app.current_mode == "dashboard"
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        await pilot.press("escape")
        await pilot.press("2", "q")
        assert app.current_mode == "dashboard"
        await pilot.click("#nav-tabs", offset=(20, 0))
        assert app.current_mode == "runs"


async def test_colon_opens_a_run_by_the_end_of_its_id_and_filters_by_agent(
    deck: Deck, harness: ToolHarness
) -> None:
    agent = await harness.agent()
    response = await harness.client.post(
        "/v1/runs", json={"agent": agent, "input": "find me"}, headers=harness.admin
    )
    run_id = str((await response.get_json())["id"])
    app = deck()
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.connection == "live")
        # from the dashboard, where no run is loaded
        await pilot.press("colon", *f"run {run_id[-8:]}", "enter")
        await until(pilot, lambda: app.current_mode == "detail")
        assert app.selected_run == run_id
        await until(pilot, lambda: "find me" in static(app, "#run-summary"))

        await pilot.press("colon", *"run 0000dead", "enter")
        await until(pilot, lambda: any("ends with '0000dead'" in n for n in notifications(app)))
        assert app.current_mode == "detail"

        await pilot.press("colon", *f"agent {agent}", "enter")
        await until(pilot, lambda: app.current_mode == "runs")
        await until(pilot, lambda: row_keys(app, "#runs") == [run_id])
        assert app.screen.query_one("#agent", Input).value == agent

        await pilot.press("colon", *"launch rockets", "enter")
        await until(pilot, lambda: any("Unknown command" in n for n in notifications(app)))


async def test_runs_update_live_without_losing_the_cursor(deck: Deck, harness: ToolHarness) -> None:
    agent = await harness.agent()
    first = [
        await harness.client.post(
            "/v1/runs", json={"agent": agent, "input": f"r{n}"}, headers=harness.admin
        )
        for n in range(3)
    ]
    ids = [str((await r.get_json())["id"]) for r in first]
    app = deck()
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.connection == "live")
        await pilot.press("2", "a", *agent, "enter")
        await until(pilot, lambda: row_keys(app, "#runs") == ids[::-1])
        await pilot.press("down")
        assert runs_list(app).cursor_key == ids[1]

        response = await harness.client.post(
            "/v1/runs", json={"agent": agent, "input": "new"}, headers=harness.admin
        )
        newest = str((await response.get_json())["id"])
        await until(pilot, lambda: row_keys(app, "#runs")[:1] == [newest])
        assert runs_list(app).cursor_key == ids[1]

        status, _ = await harness.claim(ids[1])
        assert status == 200
        runs = runs_list(app)
        await until(pilot, lambda: runs.cell(ids[1], "status") == "running")
        assert runs.cursor_key == ids[1]

        await pilot.press("slash", *ids[0][-12:])
        await until(pilot, lambda: row_keys(app, "#runs") == [ids[0]])
        assert app.screen.query_one("#text", Input).has_focus


async def test_run_detail_steps_and_cancel(deck: Deck, harness: ToolHarness) -> None:
    await harness.policy({"id": "notes-ok", "tool": "notes.*", "effect": "allow"})
    run_id, epoch = await harness.running(tools=["notes.*"], budget={"max_steps": 10})
    await harness.step(
        run_id,
        epoch,
        1,
        input={"messages": [{"role": "user", "content": "write it down"}]},
        usage=usage(100, 20, 0.001),
        model="scripted",
    )
    status, _ = await harness.authorize(run_id, epoch, 2, "notes.write_note", {"text": "remember"})
    assert status == 200
    app = deck()
    async with app.run_test(size=SIZE) as pilot:
        app.open_run(run_id)
        await until(pilot, lambda: table(app, "#steps").row_count == 2)
        assert "write it down" in static(app, "#step-body")
        assert "steps 2 / 10" in static(app, "#run-summary")
        await pilot.press("j")
        body = static(app, "#step-body")
        assert "remember" in body
        assert "allow by rule notes-ok" in body
        await pilot.press("k")
        assert "write it down" in static(app, "#step-body")

        await pilot.press("n")
        await harness.step(run_id, epoch, 3, usage=usage(10, 5, 0.0001))
        await until(pilot, lambda: table(app, "#steps").row_count == 3)
        assert table(app, "#steps").cursor_row == 2, "a live run is followed"

        await pilot.press("c")
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.click("#yes")
        await until(pilot, lambda: "cancelled" in static(app, "#run-summary"))
    async with AsyncFerrumDeck(app.client.url, harness.admin["Authorization"][7:]) as api:
        assert (await api.run(run_id)).status is RunStatus.CANCELLED


async def test_fifty_calls_are_rejected_with_one_reason_in_one_go(
    deck: Deck, harness: ToolHarness
) -> None:
    await harness.policy({"id": "ask-notes", "tool": "notes.*", "effect": "require_approval"})
    agent = await harness.agent(tools=["notes.*"])
    runs = [await parked_call(harness, agent, f"call {n}") for n in range(50)]
    calls = {await approval_of(harness, run_id) for run_id in runs}
    app = deck()
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.connection == "live")
        await pilot.press("4")
        await until(pilot, lambda: calls <= set(row_keys(app, "#approvals")))
        await pilot.press("asterisk", "r")
        assert isinstance(app.screen, ReasonScreen)
        assert "all" in text_of(app.screen.query_one(".question", Static))
        await pilot.press(*"worker lost", "enter")
        await until(pilot, lambda: not calls & set(row_keys(app, "#approvals")), within=20)
        assert any("calls rejected" in n for n in notifications(app))
    decided = [a for a in await harness.approvals() if a["id"] in calls]
    assert {(a["status"], a["reason"]) for a in decided} == {("rejected", "worker lost")}
    assert len(decided) == 50


async def test_approve_and_reject_with_reasons(deck: Deck, harness: ToolHarness) -> None:
    await harness.policy({"id": "ask-notes", "tool": "notes.*", "effect": "require_approval"})
    agent = await harness.agent(tools=["notes.*"])
    first = await parked_call(harness, agent, "first note")
    app = deck()
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.connection == "live")
        await pilot.press("2")
        second = await parked_call(harness, agent, "second note")
        await until(
            pilot, lambda: any("asks to call notes.write_note" in n for n in notifications(app))
        )
        assert app.current_mode == "runs"
        badge = lambda: static(app, "#nav-pending")  # noqa: E731
        await until(pilot, lambda: "pending" in badge() and "no approvals" not in badge())

        first_call, second_call = (
            await approval_of(harness, first),
            await approval_of(harness, second),
        )
        await pilot.press("4")
        pending = table(app, "#approvals")
        shown = lambda: row_keys(app, "#approvals")  # noqa: E731
        await until(pilot, lambda: {first_call, second_call} <= set(shown()))
        pending.move_cursor(row=shown().index(second_call))
        await pilot.pause()
        assert "second note" in static(app, "#approval-body")
        await pilot.press("a")
        assert isinstance(app.screen, ReasonScreen)
        await pilot.press("enter")
        assert "reason is required" in static(app, "#reason-error")
        await pilot.press(*"ticket 42", "enter")
        await until(pilot, lambda: second_call not in shown())

        pending.move_cursor(row=shown().index(first_call))
        await pilot.press("r")
        await pilot.press(*"not today", "enter")
        await until(pilot, lambda: first_call not in shown())

    decided = {a["run_id"]: a for a in await harness.approvals() if a["run_id"] in (first, second)}
    assert decided[second]["status"] == ApprovalStatus.APPROVED
    assert decided[second]["reason"] == "ticket 42"
    assert decided[first]["status"] == ApprovalStatus.REJECTED
    assert decided[first]["reason"] == "not today"


async def test_a_double_decision_is_a_message_not_a_crash(deck: Deck, harness: ToolHarness) -> None:
    await harness.policy({"id": "ask-notes", "tool": "notes.*", "effect": "require_approval"})
    run_id = await parked_call(harness, await harness.agent(tools=["notes.*"]), "contested")
    approval = await approval_of(harness, run_id)
    app = deck()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("4")
        await until(pilot, lambda: approval in row_keys(app, "#approvals"))
        table(app, "#approvals").move_cursor(row=row_keys(app, "#approvals").index(approval))
        await pilot.press("a", *"me first")
        status, _ = await harness.decide(approval, "reject", "someone else was faster")
        assert status == 200
        await pilot.press("enter")
        await until(pilot, lambda: any("already rejected" in n for n in notifications(app)))
        assert app.is_running


async def test_a_wrong_key_is_explained(deck: Deck) -> None:
    app = deck(key="fd_wrong")
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: any("refused the API key" in n for n in notifications(app)))
        assert app.connection == "offline"


async def test_the_deck_reconnects_when_the_gateway_comes_back(
    deck: Deck, harness: ToolHarness, settings: GatewaySettings
) -> None:
    agent = await harness.agent()
    port = free_port()
    first = serve_gateway(settings, port)
    served = await first.__aenter__()
    app = deck(url=served.url)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.connection == "live")
        await pilot.press("2", "a", *agent, "enter")
        await first.__aexit__(None, None, None)
        await until(pilot, lambda: "reconnecting" in static(app, "#nav-connection"))
        async with serve_gateway(settings, port):
            await until(pilot, lambda: app.connection == "live", within=15)
            response = await harness.client.post(
                "/v1/runs", json={"agent": agent, "input": "after"}, headers=harness.admin
            )
            run_id = str((await response.get_json())["id"])
            await until(pilot, lambda: row_keys(app, "#runs") == [run_id])


async def approval_of(harness: ToolHarness, run_id: str) -> str:
    (approval,) = await harness.approvals(run_id=run_id)
    return str(approval["id"])


@pytest.mark.skipif(
    not (Path(__file__).parents[2] / "services/gateway/routes/audit.py").exists(),
    reason="the audit API (services/gateway/routes/audit.py) has not landed yet",
)
async def test_audit_is_browsed_and_verified(deck: Deck, harness: ToolHarness) -> None:
    await harness.policy({"id": "audited", "tool": "notes.*", "effect": "deny"})
    app = deck()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("5")
        await until(pilot, lambda: table(app, "#audit").row_count > 0)
        assert static(app, "#audit-event").strip()
        await pilot.press("v")
        await until(pilot, lambda: "chain" in static(app, "#verify-result"))
        assert "intact" in static(app, "#verify-result")
        await pilot.press("f", *"no.such.action", "enter")
        await until(pilot, lambda: table(app, "#audit").row_count == 0)
