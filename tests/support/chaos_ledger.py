"""What must hold after any fault, read straight from PostgreSQL and the notes file.

One place for the chaos suite (which asserts a clean ledger) and the soak bench (which
counts what is not): every accepted run ended, and ended once; its steps numbered 1..n
with no model answer recorded twice; no note written twice; and no run in the database
that no client was told about.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Collection
from dataclasses import dataclass, field

import asyncpg

from services.contract.runs import TERMINAL_STATUSES

# A dead-lettered run ends `failed`, audited as `run.dead_lettered` (with the deliveries).
TERMINAL_ACTIONS = sorted(f"run.{status.value}" for status in TERMINAL_STATUSES)
TERMINAL_ACTIONS.append("run.dead_lettered")
# An operator sending a dead-lettered run back: the one way a run may end twice.
REQUEUE_ACTIONS = ["run.requeued"]


@dataclass
class Ledger:
    accepted: int
    statuses: Counter[str] = field(default_factory=Counter)
    unfinished: list[str] = field(default_factory=list)
    ended_twice: list[str] = field(default_factory=list)
    ended_unaudited: list[str] = field(default_factory=list)
    step_gaps: list[str] = field(default_factory=list)
    repeated_llm_steps: list[str] = field(default_factory=list)
    doubled_notes: list[str] = field(default_factory=list)
    strangers: list[str] = field(default_factory=list)

    @property
    def lost(self) -> int:
        """Accepted, and never ended."""
        return len(self.unfinished)

    @property
    def duplicated(self) -> int:
        """Ended twice, a step recorded twice, or a side effect repeated."""
        return (
            len(self.ended_twice)
            + len(self.step_gaps)
            + len(self.repeated_llm_steps)
            + len(self.doubled_notes)
        )

    def problems(self) -> dict[str, list[str]]:
        found = {
            "accepted but not ended": self.unfinished,
            "ended more often than started": self.ended_twice,
            "ended without an audit event": self.ended_unaudited,
            "steps not numbered 1..n": self.step_gaps,
            "a model answer recorded twice": self.repeated_llm_steps,
            "a note written twice": self.doubled_notes,
            "runs no client was told about": self.strangers,
        }
        return {what: runs for what, runs in found.items() if runs}


async def reckon(
    db: asyncpg.Pool, run_ids: Collection[str], notes: Counter[str], agents: Collection[str]
) -> Ledger:
    """The ledger of `run_ids` (all runs accepted for `agents`), against `notes`, the
    lines of the notes file."""
    ids = [uuid.UUID(r) for r in run_ids]
    targets = [f"run:{r}" for r in run_ids]
    ledger = Ledger(accepted=len(ids))
    runs = {
        str(row["id"]): row
        for row in await db.fetch(
            "SELECT id, status, steps_count FROM runs WHERE id = ANY($1::uuid[])", ids
        )
    }
    events: Counter[tuple[str, str]] = Counter()
    for row in await db.fetch(
        """SELECT target, action, count(*) AS n FROM audit_events
            WHERE target = ANY($1::text[]) AND action = ANY($2::text[])
            GROUP BY target, action""",
        targets,
        TERMINAL_ACTIONS + REQUEUE_ACTIONS,
    ):
        kind = "ended" if row["action"] in TERMINAL_ACTIONS else "requeued"
        events[(row["target"].removeprefix("run:"), kind)] += row["n"]
    seqs = {
        str(row["run_id"]): list(row["seqs"])
        for row in await db.fetch(
            """SELECT run_id, array_agg(seq ORDER BY seq) AS seqs FROM steps
                WHERE run_id = ANY($1::uuid[]) GROUP BY run_id""",
            ids,
        )
    }
    for run_id in run_ids:
        run = runs.get(run_id)
        status = run["status"] if run is not None else "missing"
        ledger.statuses[status] += 1
        terminal = status in TERMINAL_STATUSES
        if not terminal:
            ledger.unfinished.append(f"{run_id} ({status})")
        expected = events[(run_id, "requeued")] + (1 if terminal else 0)
        ended = events[(run_id, "ended")]
        if ended > expected:
            ledger.ended_twice.append(f"{run_id} (ended {ended}x)")
        elif ended < expected:
            ledger.ended_unaudited.append(run_id)
        count = run["steps_count"] if run is not None else 0
        if seqs.get(run_id, []) != list(range(1, count + 1)):
            ledger.step_gaps.append(f"{run_id} (steps {seqs.get(run_id)}, count {count})")
    ledger.repeated_llm_steps = [
        str(row["run_id"])
        for row in await db.fetch(
            """SELECT run_id FROM steps
                WHERE run_id = ANY($1::uuid[]) AND kind = 'llm_call' AND status = 'completed'
                GROUP BY run_id, input HAVING count(*) > 1""",
            ids,
        )
    ]
    ledger.doubled_notes = [f"{note!r} x{n}" for note, n in notes.items() if n > 1]
    ledger.strangers = [
        str(row["id"])
        for row in await db.fetch(
            """SELECT id FROM runs
                WHERE agent_name = ANY($1::text[]) AND NOT (id = ANY($2::uuid[]))""",
            list(agents),
            ids,
        )
    ]
    return ledger
