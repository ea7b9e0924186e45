"""The invariants every chaos scenario ends by asserting."""

from __future__ import annotations

import uuid
from collections.abc import Collection

from services.contract.runs import TERMINAL_STATUSES
from testbed.waiting import eventually
from tests.support.chaos_ledger import reckon
from tests.support.chaos_stack import ChaosStack


async def _open(stack: ChaosStack, run_ids: Collection[str]) -> list[tuple[str, str]]:
    rows = await stack.db.fetch(
        "SELECT id, status FROM runs WHERE id = ANY($1::uuid[]) AND NOT (status = ANY($2))",
        [uuid.UUID(r) for r in run_ids],
        [s.value for s in TERMINAL_STATUSES],
    )
    return [(str(row["id"]), row["status"]) for row in rows]


async def _decline_retries(stack: ChaosStack, agents: Collection[str]) -> None:
    """Play the operator: a tool call a lost worker may or may not have made waits for a
    human before it is made again (here every approval is one: the policy allows the
    notes tools), and the safe answer is no."""
    pending = (await stack.api.get("/v1/approvals?status=pending&limit=200")).json()
    for approval in pending["items"]:
        if approval["agent"] in agents:
            await stack.api.post(
                f"/v1/approvals/{approval['id']}/reject",
                json={"reason": "chaos: it may have happened already"},
            )


async def assert_invariants(
    stack: ChaosStack, run_ids: Collection[str], agents: Collection[str], *, within: float = 45
) -> None:
    """Every accepted run ends, exactly once (a retry parked for a human is declined);
    steps 1..n with no model answer recorded twice; no note written twice; no run that
    no client was told about; the audit chain intact."""
    assert run_ids, "the scenario accepted no runs"

    async def still_open() -> list[tuple[str, str]]:
        await _decline_retries(stack, agents)
        return await _open(stack, run_ids)

    try:
        await eventually(still_open, lambda still: not still, within=within)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{stack.logs()}") from None
    ledger = await reckon(stack.db, run_ids, stack.notes(), agents)
    assert not ledger.problems(), f"{ledger.problems()}\n{stack.logs()}"
    verification = (await stack.api.get("/v1/audit/verify")).json()
    assert verification["intact"], verification
