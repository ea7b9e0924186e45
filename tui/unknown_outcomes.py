"""Which waiting calls retry a call of unknown outcome: after a worker dies mid-call, the
gateway marks the call's step `outcome_unknown` and parks the same call (tool and
arguments) as a later step for a human to allow again. Told by the run's steps, not by
the words of the approval's explanation, which are for people."""

from __future__ import annotations

import json
import uuid
from collections import defaultdict
from typing import Any

from services.client import AsyncFerrumDeck
from services.contract.api import Approval, Step
from services.contract.runs import StepStatus


def _call(tool: str | None, arguments: Any) -> tuple[str | None, str]:
    return tool, json.dumps(arguments, sort_keys=True)


async def unknown_outcome_retries(
    client: AsyncFerrumDeck, pending: list[Approval]
) -> dict[str, str | None]:
    """The `pending` approvals that retry a call of unknown outcome, by id, each with the
    worker that started the lost call (None for a step recorded before steps named it):
    one read of the steps of each run among them."""
    by_run: dict[uuid.UUID, list[Approval]] = defaultdict(list)
    for approval in pending:
        by_run[approval.run_id].append(approval)
    retries: dict[str, str | None] = {}
    for run_id, approvals in by_run.items():
        lost: dict[tuple[str | None, str], Step] = {}
        async for step in client.iter_steps(run_id):
            if step.status is StepStatus.OUTCOME_UNKNOWN:
                lost.setdefault(_call(step.tool, step.input), step)
        for approval in approvals:
            retried = lost.get(_call(approval.tool, approval.arguments))
            if retried is not None and retried.seq < approval.step_seq:
                retries[str(approval.id)] = retried.worker
    return retries
