"""A small, fixed history for snapshot tests: every id, time, token and cent is constant,
so screens render the same on every machine. Written with SQL because ids and times
are what the API rightly never lets a caller choose."""

from __future__ import annotations

import hashlib
import secrets
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from services.contract.ids import first_uuid7_at

NOW = datetime(2026, 1, 15, 12, 0, tzinfo=UTC)
BUDGET = {"max_steps": 20, "max_tokens": 20000, "max_cost_usd": 0.5}
DECISION = {
    "effect": "require_approval",
    "rule": "ask-notes",
    "policy_version": 1,
    "explanation": "rule ask-notes requires approval for notes.write_note",
}


# n, agent, status, minutes ago, prompt tokens, completion tokens, cost, steps
RUNS = [
    (1, "support", "completed", 50, 900, 200, 0.0026, 3),
    (2, "triage", "failed", 40, 300, 0, 0.0006, 1),
    (3, "support", "completed", 14, 1200, 340, 0.00376, 4),
    (4, "triage", "cancelled", 12, 0, 0, 0.0, 0),
    (5, "support", "budget_exceeded", 10, 18000, 2100, 0.0444, 20),
    (6, "triage", "running", 6, 450, 90, 0.00126, 2),
    (7, "support", "waiting_approval", 4, 120, 30, 0.00036, 2),
    (8, "support", "queued", 2, 0, 0, 0.0, 0),
]


def run_id(n: int) -> uuid.UUID:
    """Run n's UUIDv7, made at its creation time as the gateway makes it (windows of
    `GET /v1/runs/summary` are id ranges), ending in n (the short id screens show)."""
    ago = next(row[3] for row in RUNS if row[0] == n)
    return uuid.UUID(int=first_uuid7_at(NOW - timedelta(minutes=ago)).int | n)


PARKED = run_id(7)
APPROVAL = uuid.UUID("019bc000-0000-7000-9000-000000000001")


async def _project(conn: asyncpg.Connection, table: str) -> dict[str, Any]:
    """The project column once the security migration added it; nothing before."""
    has = await conn.fetchval(
        """SELECT count(*) FROM information_schema.columns
            WHERE table_schema = current_schema() AND table_name = $1
              AND column_name = 'project'""",
        table,
    )
    return {"project": "default"} if has else {}


async def _insert(conn: asyncpg.Connection, table: str, row: dict[str, Any]) -> None:
    row = {**row, **await _project(conn, table)}
    columns = ", ".join(row)
    params = ", ".join(f"${i}" for i in range(1, len(row) + 1))
    await conn.execute(f"INSERT INTO {table} ({columns}) VALUES ({params})", *row.values())


async def seed(conn: asyncpg.Connection) -> str:
    """Write the history and an admin key; returns the key's secret."""
    secret = "fd_" + secrets.token_urlsafe(32)
    await _insert(
        conn,
        "api_keys",
        {
            "id": uuid.uuid4(),
            "name": "snapshots",
            "role": "admin",
            "key_hash": hashlib.sha256(secret.encode()).hexdigest(),
        },
    )
    for name in ("support", "triage"):
        await _insert(
            conn,
            "agents",
            {
                "name": name,
                "version": 1,
                "model": "scripted",
                "system_prompt": f"You are the {name} agent.",
                "tools": ["notes.*"],
                "budget": BUDGET,
                "created_at": NOW - timedelta(days=1),
            },
        )
    for n, agent, status, ago, prompt, completion, cost, steps in RUNS:
        created = NOW - timedelta(minutes=ago)
        finished = status in ("completed", "failed", "cancelled", "budget_exceeded")
        await _insert(
            conn,
            "runs",
            {
                "id": run_id(n),
                "agent_name": agent,
                "agent_version": 1,
                "status": status,
                "input": f"ticket {1040 + n}: please help",
                "output": "Done." if status == "completed" else None,
                "error": "model unavailable" if status == "failed" else None,
                "prompt_tokens": prompt,
                "completion_tokens": completion,
                "cost_usd": cost,
                "steps_count": steps,
                "epoch": 1 if status != "queued" else 0,
                "created_at": created,
                "started_at": created + timedelta(seconds=1) if status != "queued" else None,
                "finished_at": created + timedelta(seconds=40) if finished else None,
            },
        )
    started = NOW - timedelta(minutes=4)
    await _insert(
        conn,
        "steps",
        {
            "run_id": PARKED,
            "seq": 1,
            "kind": "llm_call",
            "status": "completed",
            "model": "scripted",
            "input": {
                "messages": [
                    {"role": "system", "content": "You are the support agent."},
                    {"role": "user", "content": "ticket 1047: please help"},
                ]
            },
            "output": {
                "message": {
                    "role": "assistant",
                    "content": "I will note the refund.",
                    "tool_calls": [
                        {
                            "id": "call-1",
                            "function": {
                                "name": "notes__write_note",
                                "arguments": '{"text": "Refund order 1047"}',
                            },
                        }
                    ],
                }
            },
            "prompt_tokens": 120,
            "completion_tokens": 30,
            "cost_usd": 0.00036,
            "epoch": 1,
            "started_at": started,
            "finished_at": started + timedelta(milliseconds=850),
        },
    )
    await _insert(
        conn,
        "steps",
        {
            "run_id": PARKED,
            "seq": 2,
            "kind": "tool_call",
            "status": "waiting_approval",
            "tool": "notes.write_note",
            "tool_call_id": "call-1",
            "input": {"text": "Refund order 1047"},
            "decision": DECISION,
            "epoch": 1,
            "started_at": started + timedelta(seconds=1),
        },
    )
    await _insert(
        conn,
        "approvals",
        {
            "id": APPROVAL,
            "run_id": PARKED,
            "step_seq": 2,
            "agent_name": "support",
            "tool": "notes.write_note",
            "arguments": {"text": "Refund order 1047"},
            "rule": "ask-notes",
            "policy_version": 1,
            "explanation": DECISION["explanation"],
            "status": "pending",
            "created_at": started + timedelta(seconds=1),
        },
    )
    return secret
