"""After a worker dies mid-call, every non-idempotent call it held waits for a human as a
call of unknown outcome; the operator marks them all with one key and refuses them with
one reason, leaving the ordinary approvals alone — against a real gateway."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import cast

import asyncpg
from textual.widgets import DataTable, Static

from tests.support.harness import ToolHarness
from tests.tui.conftest import notifications, text_of, until
from tests.tui.test_deck import approval_of, parked_call, row_keys
from tui.app import FerrumDeckApp
from tui.screens.approvals import ApprovalsScreen
from tui.screens.modals import ReasonScreen

SIZE = (140, 40)
Deck = Callable[..., FerrumDeckApp]


async def _unknown_outcome(
    harness: ToolHarness, db: asyncpg.Pool, agent: str, text: str, started_by: str = "w1"
) -> str:
    """A run whose notes.write_note call was started by `started_by`, which then died: w2
    finds the call of unknown outcome, and the retry waits for a human."""
    response = await harness.client.post(
        "/v1/runs", json={"agent": agent, "input": text}, headers=harness.admin
    )
    run_id = str((await response.get_json())["id"])
    _, grant = await harness.claim(run_id, started_by)
    _, verdict = await harness.authorize(
        run_id, grant["epoch"], 1, "notes.write_note", {"text": text}
    )
    assert verdict["verdict"] == "execute", verdict
    await db.execute(
        "UPDATE runs SET lease_expires_at = now() - interval '1 second' WHERE id = $1",
        uuid.UUID(run_id),
    )
    _, grant = await harness.claim(run_id, "w2")
    _, retry = await harness.authorize(
        run_id, grant["epoch"], 1, "notes.write_note", {"text": text}
    )
    assert retry["verdict"] == "parked", retry
    return run_id


async def test_u_marks_the_calls_of_unknown_outcome_and_one_reason_refuses_them(
    deck: Deck, harness: ToolHarness, db: asyncpg.Pool
) -> None:
    await harness.policy(
        {"id": "notes-ok", "tool": "notes.*", "effect": "allow"},
        {"id": "ask-mail", "tool": "mail.*", "effect": "require_approval"},
    )
    agent = await harness.agent(tools=["notes.*", "mail.*"])
    lost = {
        await approval_of(harness, await _unknown_outcome(harness, db, agent, f"lost {n}"))
        for n in range(3)
    }
    ordinary = set()
    for n in range(2):
        response = await harness.client.post(
            "/v1/runs", json={"agent": agent, "input": f"mail {n}"}, headers=harness.admin
        )
        run_id = str((await response.get_json())["id"])
        status, grant = await harness.claim(run_id)
        assert status == 200
        _, verdict = await harness.authorize(
            run_id, grant["epoch"], 1, "mail.send", {"to": f"x{n}@example.com"}
        )
        assert verdict["verdict"] == "parked", verdict
        ordinary.add(await approval_of(harness, run_id))

    app = deck()
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.connection == "live")
        await pilot.press("4")
        await until(pilot, lambda: lost | ordinary <= set(row_keys(app, "#approvals")))
        await pilot.press("u")
        await until(pilot, lambda: any("unknown outcome marked" in n for n in notifications(app)))
        screen = cast(ApprovalsScreen, app.screen)
        assert lost <= screen._marked
        assert not ordinary & screen._marked
        await pilot.press("r")
        assert isinstance(app.screen, ReasonScreen)
        question = text_of(app.screen.query_one(".question", Static))
        assert "notes.write_note" in question
        assert "mail.send" not in question
        await pilot.press(*"w1 died mid-call", "enter")
        await until(pilot, lambda: not lost & set(row_keys(app, "#approvals")), within=20)
        assert ordinary <= set(row_keys(app, "#approvals"))

    decided = {a["id"]: a for a in await harness.approvals()}
    assert {(decided[i]["status"], decided[i]["reason"]) for i in lost} == {
        ("rejected", "w1 died mid-call")
    }
    assert {decided[i]["status"] for i in ordinary} == {"pending"}


async def test_shift_r_marks_the_calls_of_the_selected_run(
    deck: Deck, harness: ToolHarness
) -> None:
    await harness.policy({"id": "ask-notes", "tool": "notes.*", "effect": "require_approval"})
    agent = await harness.agent(tools=["notes.*"])
    runs = [await parked_call(harness, agent, f"run {n}") for n in range(2)]
    calls = [await approval_of(harness, run_id) for run_id in runs]
    app = deck()
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.connection == "live")
        await pilot.press("4")
        await until(pilot, lambda: set(calls) <= set(row_keys(app, "#approvals")))
        table = app.screen.query_one("#approvals", DataTable)
        table.move_cursor(row=row_keys(app, "#approvals").index(calls[1]))
        await pilot.press("R")
        assert cast(ApprovalsScreen, app.screen)._marked == {calls[1]}


async def test_shift_w_marks_the_unknown_outcomes_of_the_selected_calls_worker(
    deck: Deck, harness: ToolHarness, db: asyncpg.Pool
) -> None:
    """Two workers died: the operator allows again what one left and refuses the other's."""
    await harness.policy({"id": "notes-ok", "tool": "notes.*", "effect": "allow"})
    agent = await harness.agent(tools=["notes.*"])
    of_w1 = {
        await approval_of(harness, await _unknown_outcome(harness, db, agent, f"w1 {n}"))
        for n in range(2)
    }
    of_w3 = await approval_of(
        harness, await _unknown_outcome(harness, db, agent, "w3", started_by="w3")
    )
    steps = await harness.steps(await _run_of(harness, of_w3))
    assert [(s["status"], s["worker"]) for s in steps] == [
        ("outcome_unknown", "w3"),
        ("waiting_approval", "w2"),
    ]
    app = deck()
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.connection == "live")
        await pilot.press("4")
        await until(pilot, lambda: of_w1 | {of_w3} <= set(row_keys(app, "#approvals")))
        table = app.screen.query_one("#approvals", DataTable)
        table.move_cursor(row=row_keys(app, "#approvals").index(of_w3))
        await pilot.press("W")
        await until(pilot, lambda: any("of worker w3 marked" in n for n in notifications(app)))
        assert cast(ApprovalsScreen, app.screen)._marked == {of_w3}
        table.move_cursor(row=row_keys(app, "#approvals").index(sorted(of_w1)[0]))
        await pilot.press("W")
        await until(
            pilot,
            lambda: any("2 calls of unknown outcome of worker w1" in n for n in notifications(app)),
        )
        assert cast(ApprovalsScreen, app.screen)._marked == of_w1 | {of_w3}


async def _run_of(harness: ToolHarness, approval_id: str) -> str:
    return next(str(a["run_id"]) for a in await harness.approvals() if a["id"] == approval_id)
