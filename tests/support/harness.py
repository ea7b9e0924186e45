"""Drives the gateway's public and worker APIs the way a worker would, for tests."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from quart.typing import TestClientProtocol as Client


def _now() -> str:
    return datetime.now(UTC).isoformat()


class Harness:
    def __init__(self, client: Client, admin: dict[str, str], worker: dict[str, str]) -> None:
        self.client = client
        self.admin = admin
        self.worker = worker
        self.lease_tokens: dict[str, str] = {}
        """The token of each run's latest claim, presented with its later callbacks the
        way a worker does, unless a test gives its own."""
        self.claimed_by: dict[str, str] = {}
        """The worker label of each run's latest claim."""

    async def agent(self, **fields: Any) -> str:
        name = f"agent-{uuid.uuid4().hex[:8]}"
        response = await self.client.post(
            "/v1/agents", json={"name": name, "model": "scripted", **fields}, headers=self.admin
        )
        assert response.status_code == 201, await response.get_json()
        return name

    async def run(self, **agent_fields: Any) -> str:
        agent = await self.agent(**agent_fields)
        response = await self.client.post(
            "/v1/runs", json={"agent": agent, "input": "hello"}, headers=self.admin
        )
        return str((await response.get_json())["id"])

    async def call(self, run_id: str, action: str, body: dict[str, Any]) -> tuple[int, Any]:
        if "epoch" in body and run_id in self.lease_tokens:
            body = {"lease_token": self.lease_tokens[run_id], **body}
        response = await self.client.post(
            f"/v1/worker/runs/{run_id}/{action}", json=body, headers=self.worker
        )
        if response.status_code == 204:
            return 204, None
        payload = await response.get_json()
        if action == "claim" and response.status_code == 200:
            self.lease_tokens[run_id] = payload["lease_token"]
            self.claimed_by[run_id] = body["worker_id"]
        return response.status_code, payload

    async def claim(self, run_id: str, worker_id: str = "w1") -> tuple[int, Any]:
        return await self.call(run_id, "claim", {"worker_id": worker_id})

    async def step(self, run_id: str, epoch: int, seq: int, **fields: Any) -> tuple[int, Any]:
        body = {
            "epoch": epoch,
            "seq": seq,
            "kind": "llm_call",
            "status": "completed",
            "started_at": _now(),
            "finished_at": _now(),
            "output": {"message": {"role": "assistant", "content": f"step {seq}"}},
            **fields,
        }
        return await self.call(run_id, "steps", body)

    async def get(self, run_id: str) -> Any:
        return await (await self.client.get(f"/v1/runs/{run_id}", headers=self.admin)).get_json()


def usage(prompt: int, completion: int, cost: float | None) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "cost_usd": cost,
    }


def tool_spec(name: str, **fields: Any) -> dict[str, Any]:
    """A tool as a worker reports it (`ToolSpec`)."""
    server, _, tool = name.partition(".")
    return {"name": name, "server": server, "tool": tool, **fields}


class ToolHarness(Harness):
    """Adds tool listings, policies, tool authorization and approvals.

    A worker asks about a tool only once it has reported it (the gateway refuses a tool
    the lease holder does not list), so by default `authorize` first lists the tool as
    shared under the worker that claimed the run; `lists_tools=False` leaves every
    listing to the test."""

    def __init__(
        self,
        client: Client,
        admin: dict[str, str],
        worker: dict[str, str],
        *,
        lists_tools: bool = True,
    ) -> None:
        super().__init__(client, admin, worker)
        self.lists_tools = lists_tools
        self._listed: dict[str, dict[str, dict[str, Any]]] = {}

    async def list_tools(self, worker_id: str, *tools: dict[str, Any]) -> None:
        """Report `tools` as the listing of `worker_id`, replacing what it listed."""
        self._listed[worker_id] = {tool["name"]: tool for tool in tools}
        response = await self.client.put(
            "/v1/worker/tools",
            json={"worker_id": worker_id, "tools": list(tools)},
            headers=self.worker,
        )
        assert response.status_code == 204, await response.get_json()

    async def policy(self, *rules: dict[str, Any]) -> int:
        response = await self.client.put(
            "/v1/policies", json={"rules": list(rules)}, headers=self.admin
        )
        assert response.status_code == 200, await response.get_json()
        return int((await response.get_json())["version"])

    async def running(self, **agent_fields: Any) -> tuple[str, int]:
        """A claimed run of a fresh agent: its id and lease epoch."""
        run_id = await self.run(**agent_fields)
        status, grant = await self.claim(run_id)
        assert status == 200, grant
        return run_id, int(grant["epoch"])

    async def authorize(
        self,
        run_id: str,
        epoch: int,
        seq: int,
        tool: str,
        arguments: dict[str, Any] | None = None,
        *,
        call_id: str | None = None,
        idempotent: bool = False,
    ) -> tuple[int, Any]:
        worker_id = self.claimed_by.get(run_id)
        listed = self._listed.get(worker_id or "", {})
        if self.lists_tools and worker_id is not None and tool not in listed:
            await self.list_tools(worker_id, *listed.values(), tool_spec(tool))
        return await self.call(
            run_id,
            "tools/authorize",
            {
                "epoch": epoch,
                "seq": seq,
                "tool": tool,
                "tool_call_id": call_id or f"call-{seq}",
                "arguments": arguments or {},
                "idempotent": idempotent,
            },
        )

    async def steps(self, run_id: str) -> list[dict[str, Any]]:
        response = await self.client.get(f"/v1/runs/{run_id}/steps", headers=self.admin)
        items: list[dict[str, Any]] = (await response.get_json())["items"]
        return items

    async def approvals(self, **query: str) -> list[dict[str, Any]]:
        params = "&".join(f"{k}={v}" for k, v in query.items())
        response = await self.client.get(f"/v1/approvals?{params}", headers=self.admin)
        items: list[dict[str, Any]] = (await response.get_json())["items"]
        return items

    async def decide(self, approval_id: str, verb: str, reason: str = "ok") -> tuple[int, Any]:
        response = await self.client.post(
            f"/v1/approvals/{approval_id}/{verb}", json={"reason": reason}, headers=self.admin
        )
        return response.status_code, await response.get_json()
