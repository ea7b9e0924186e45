"""Driving a real stack over HTTP the way an integration would."""

from __future__ import annotations

import uuid
from typing import Any

from testbed.waiting import eventually
from tests.e2e.conftest import Stack

TERMINAL = {"completed", "failed", "cancelled", "budget_exceeded"}


async def register_agent(stack: Stack, model: str = "scripted", **fields: Any) -> str:
    name = f"e2e-{uuid.uuid4().hex[:8]}"
    response = await stack.api.post("/v1/agents", json={"name": name, "model": model, **fields})
    assert response.status_code == 201, response.text
    return name


async def start_run(stack: Stack, agent: str, text: str) -> dict[str, Any]:
    response = await stack.api.post("/v1/runs", json={"agent": agent, "input": text})
    assert response.status_code == 202, response.text
    run: dict[str, Any] = response.json()
    return run


async def get_run(stack: Stack, run_id: str) -> dict[str, Any]:
    body: dict[str, Any] = (await stack.api.get(f"/v1/runs/{run_id}")).json()
    return body


async def wait_finished(stack: Stack, run_id: str, within: float = 20) -> dict[str, Any]:
    return await eventually(
        lambda: get_run(stack, run_id), lambda r: r["status"] in TERMINAL, within=within
    )


async def list_steps(stack: Stack, run_id: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = (await stack.api.get(f"/v1/runs/{run_id}/steps")).json()["items"]
    return items


def unique_prompt(label: str) -> str:
    return f"{label} {uuid.uuid4().hex[:8]}"
