"""SIGTERM, as systemd and honcho send it. A worker stops taking jobs, gives its runs
`drain` seconds, hands back those still going (another worker continues them from their
recorded steps at once) and exits 0 in time. A gateway answers every request it was sent
before it goes."""

from __future__ import annotations

import asyncio
import contextlib
import re
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from services.worker.settings import WorkerSettings
from testbed.waiting import eventually
from tests.chaos.conftest import TUNING
from tests.chaos.invariants import assert_invariants
from tests.support.chaos_load import Integration, Workload
from tests.support.chaos_stack import ChaosStack, exited


def _exit_margin() -> float:
    """What the shipped systemd unit gives a stopping worker beyond its default drain
    (`TimeoutStopSec` minus `drain_seconds`) before it is killed: the time a worker may
    take to hand back, withdraw its tools and close its MCP servers."""
    unit = Path(__file__).parents[2] / "deploy" / "systemd" / "ferrumdeck-worker@.service"
    (timeout,) = re.findall(r"^TimeoutStopSec=(\d+)$", unit.read_text(), re.MULTILINE)
    drain: float = WorkerSettings.model_fields["drain_seconds"].default
    return float(timeout) - drain


EXIT_MARGIN_SECONDS = _exit_margin()


async def test_a_stopped_worker_hands_its_runs_back_and_exits_0_within_its_drain(
    chaos: ChaosStack,
) -> None:
    await chaos.steady()
    agent = await chaos.agent("sigterm-worker")
    work = Workload(chaos.llm, "sigterm-worker")
    # Each model call takes longer than the drain the first time it is made.
    texts = [work.slow(TUNING.drain_seconds + 5) for _ in range(4)]
    client = Integration(chaos.url, chaos.admin_key)
    try:
        ids = [await client.start_run(agent, text) for text in texts]

        async def owners() -> dict[str, str | None]:
            rows = await chaos.db.fetch(
                "SELECT id, lease_owner FROM runs WHERE id = ANY($1::uuid[])",
                [uuid.UUID(str(i)) for i in ids],
            )
            return {str(r["id"]): r["lease_owner"] for r in rows}

        def all_in_model_calls(held: dict[str, str | None]) -> bool:
            asked = all(chaos.llm.turn_calls[(text, 0)] >= 1 for text in texts)
            return asked and all(held.values())

        held = await eventually(owners, all_in_model_calls, within=30)
        leaving = next(w for w in chaos.workers if w.ident == held[str(ids[0])])
        staying = next(w for w in chaos.workers if w is not leaving)
        theirs = {run for run, owner in held.items() if owner == leaving.ident}

        loop = asyncio.get_running_loop()
        signalled = loop.time()
        code = await leaving.terminate(within=TUNING.drain_seconds + 15)
        took = loop.time() - signalled
        assert code == 0, leaving.log_tail()
        assert took < TUNING.drain_seconds + EXIT_MARGIN_SECONDS, f"took {took:.1f}s"
        released = await chaos.db.fetch(
            "SELECT target FROM audit_events WHERE action = 'run.released' AND target = ANY($1)",
            [f"run:{run}" for run in theirs],
        )
        assert {r["target"].removeprefix("run:") for r in released} == theirs

        await assert_invariants(chaos, client.accepted, [agent])
    finally:
        await client.aclose()
    for run in theirs:
        last_claim = await chaos.db.fetchval(
            """SELECT actor FROM audit_events WHERE target = $1 AND action = 'run.claimed'
                ORDER BY id DESC LIMIT 1""",
            f"run:{run}",
        )
        # Audited as its label, then its key.
        assert last_claim.startswith(f"{staying.ident} ("), "finished by the worker that stayed"


async def test_a_stopped_gateway_answers_every_request_it_was_sent(chaos: ChaosStack) -> None:
    await chaos.gateway.steady()
    agent = await chaos.agent("sigterm-gateway")
    work = Workload(chaos.llm, "sigterm-gateway")
    loop = asyncio.get_running_loop()
    signalled: list[float] = []
    requests: list[dict[str, Any]] = []
    # A connection per request: "sent" is then exactly "its body went out".
    http = httpx.AsyncClient(
        base_url=chaos.url,
        headers={"Authorization": f"Bearer {chaos.admin_key}"},
        timeout=30,
        limits=httpx.Limits(max_keepalive_connections=0),
    )

    async def client(method: str, path: str, make: Callable[[], Any]) -> None:
        """Requests back to back until a second after the signal."""
        while not signalled or loop.time() < signalled[0] + 1:
            requests.append(await _traced(http, method, path, make()))

    def run_body() -> dict[str, Any]:
        return {"agent": agent, "input": work.quick()}

    clients = [client("POST", "/v1/runs", run_body) for _ in range(2)]
    clients += [client("GET", "/v1/runs?limit=20", lambda: None) for _ in range(4)]
    load = asyncio.gather(*clients)
    try:
        await asyncio.sleep(1.0)
        assert chaos.gateway.current is not None
        process = chaos.gateway.current.process
        signalled.append(loop.time())
        process.terminate()
        code = await exited(process, 20)
        await load
    finally:
        if not load.done():
            load.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await load
        await http.aclose()

    assert code == 0, chaos.gateway.log_tail()
    sent_before = [r for r in requests if r["sent"] is not None and r["sent"] < signalled[0]]
    unanswered = [r for r in sent_before if not isinstance(r["outcome"], tuple)]
    assert not unanswered, f"sent before SIGTERM, never answered: {unanswered}"
    in_flight = [r for r in sent_before if r["answered"] > signalled[0]]
    assert in_flight, "no request was in flight when the signal came: nothing was tested"

    await chaos.gateway.start()
    accepted = [r["outcome"][1]["id"] for r in requests if _status(r) == 202]
    await assert_invariants(chaos, accepted, [agent])


async def _traced(
    http: httpx.AsyncClient, method: str, path: str, body: dict[str, Any] | None
) -> dict[str, Any]:
    """One request with when its body went out, when it was answered, and how."""
    loop = asyncio.get_running_loop()
    request: dict[str, Any] = {"sent": None, "answered": None, "outcome": None}

    async def trace(event: str, info: dict[str, Any]) -> None:
        if event == "http11.send_request_body.complete":
            request["sent"] = loop.time()

    try:
        response = await http.request(method, path, json=body, extensions={"trace": trace})
        request["outcome"] = (response.status_code, response.json())
    except httpx.TransportError as exc:
        request["outcome"] = type(exc).__name__
    request["answered"] = loop.time()
    return request


def _status(request: dict[str, Any]) -> int | None:
    outcome = request["outcome"]
    return outcome[0] if isinstance(outcome, tuple) else None
