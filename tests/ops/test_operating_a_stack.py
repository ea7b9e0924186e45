"""What an operator sees of a running gateway and worker: metrics that move when a run
goes through, probes, and JSON logs that name the request and run and hold no secret."""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx

from services.devstack.demo_llm import Reply
from testbed.waiting import eventually
from tests.ops.conftest import OpsStack
from tests.ops.scraping import scrape, value


async def _complete_a_run(stack: OpsStack, text: str) -> dict[str, Any]:
    name = f"ops-{uuid.uuid4().hex[:8]}"
    created = await stack.api.post("/v1/agents", json={"name": name, "model": "scripted"})
    assert created.status_code == 201, created.text
    stack.llm.script(text, Reply(content="done", prompt_tokens=40, completion_tokens=10))
    started = await stack.api.post("/v1/runs", json={"agent": name, "input": text})
    assert started.status_code == 202, started.text
    run_id = started.json()["id"]

    async def get() -> dict[str, Any]:
        body: dict[str, Any] = (await stack.api.get(f"/v1/runs/{run_id}")).json()
        return body

    run = await eventually(get, lambda r: r["status"] == "completed", within=30)
    return run


async def test_metrics_move_when_a_run_goes_through(ops_stack: OpsStack) -> None:
    gateway_metrics = f"{ops_stack.url}/metrics"
    worker_metrics = f"{ops_stack.worker_probes}/metrics"
    gw_before, wk_before = await scrape(gateway_metrics), await scrape(worker_metrics)

    run = await _complete_a_run(ops_stack, f"count me {uuid.uuid4().hex[:8]}")

    gw = await eventually(
        lambda: scrape(gateway_metrics),
        lambda s: value(s, "ferrumdeck_queue_pending") == 0,
        within=10,
    )
    wk = await scrape(worker_metrics)

    def moved(after: dict[Any, float], before: dict[Any, float], name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    requests = "ferrumdeck_http_requests_total"
    assert moved(gw, gw_before, requests, route="/v1/runs", method="POST", status="202") == 1
    claim_route = "/v1/worker/runs/<uuid:run_id>/claim"
    assert moved(gw, gw_before, requests, route=claim_route, method="POST", status="200") == 1
    assert (
        moved(
            gw,
            gw_before,
            "ferrumdeck_http_request_duration_seconds_count",
            route="/v1/runs",
            method="POST",
        )
        == 1
    )
    assert moved(gw, gw_before, "ferrumdeck_runs", status="completed") >= 1
    assert value(gw, "ferrumdeck_outbox_backlog") == 0
    assert value(gw, "ferrumdeck_queue_lag") == 0
    # Depth itself may already be 0: the sweeper trims acknowledged entries.
    assert ("ferrumdeck_queue_depth", frozenset()) in gw
    assert ("ferrumdeck_approvals_pending", frozenset()) in gw
    assert value(gw, "ferrumdeck_metrics_source_up", source="postgres") == 1
    assert value(gw, "ferrumdeck_metrics_source_up", source="redis") == 1
    labels = {v for (_name, pairs) in gw for _k, v in pairs}
    assert not any(run["id"] in label for label in labels), "a run id became a label"

    assert moved(wk, wk_before, "ferrumdeck_worker_claims_total", outcome="granted") == 1
    assert (
        moved(wk, wk_before, "ferrumdeck_worker_steps_total", kind="llm_call", outcome="completed")
        == 1
    )
    assert (
        moved(wk, wk_before, "ferrumdeck_llm_tokens_total", model="scripted", type="prompt") == 40
    )
    assert (
        moved(wk, wk_before, "ferrumdeck_llm_tokens_total", model="scripted", type="completion")
        == 10
    )
    assert moved(wk, wk_before, "ferrumdeck_llm_cost_usd_total", model="scripted") > 0
    assert (
        moved(wk, wk_before, "ferrumdeck_llm_request_duration_seconds_count", model="scripted") == 1
    )
    assert value(wk, "ferrumdeck_worker_runs_in_flight") == 0


async def test_unknown_routes_share_one_series_and_metrics_need_no_key(ops_stack: OpsStack) -> None:
    async with httpx.AsyncClient(base_url=ops_stack.url) as anonymous:
        for n in range(3):
            assert (await anonymous.get(f"/no/such/page/{n}")).status_code == 404
        refused = await anonymous.get("/v1/runs")
    assert refused.status_code == 401
    series = await scrape(f"{ops_stack.url}/metrics")
    assert (
        value(
            series, "ferrumdeck_http_requests_total", route="unmatched", method="GET", status="404"
        )
        >= 3
    )
    assert not any("/no/such/page" in v for (_n, pairs) in series for _k, v in pairs)


async def test_worker_probes_answer(ops_stack: OpsStack) -> None:
    async with httpx.AsyncClient(base_url=ops_stack.worker_probes) as client:
        assert (await client.get("/healthz")).json() == {"status": "ok"}
        assert (await client.get("/readyz")).json() == {"status": "ready", "problems": []}


def _lines(log: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in log.splitlines() if line.strip()]


async def test_logs_are_json_with_request_and_run_ids_and_no_secret(ops_stack: OpsStack) -> None:
    request_id = f"ops-{uuid.uuid4().hex}"
    # A careless integration pastes keys into a query string: the access log must not keep them.
    pasted = await ops_stack.api.get(
        "/v1/runs",
        params={"api_key": ops_stack.provider_key, "note": ops_stack.worker_key},
        headers={"X-Request-Id": request_id},
    )
    assert pasted.headers["X-Request-Id"] == request_id
    generated = (await ops_stack.api.get("/healthz")).headers["X-Request-Id"]
    assert generated
    assert generated != request_id
    run = await _complete_a_run(ops_stack, f"log me {uuid.uuid4().hex[:8]}")

    gateway_lines = await eventually(
        lambda: _async(_lines(ops_stack.gateway.log())),
        lambda lines: any(line.get("request_id") == request_id for line in lines),
    )
    worker_lines = _lines(ops_stack.worker.log())
    access = [line for line in gateway_lines if line.get("request_id") == request_id]
    assert access
    assert all(line["service"] == "gateway" for line in access)
    assert "[REDACTED]" in access[0]["message"]
    about_run = [line for line in worker_lines if line.get("run_id") == run["id"]]
    assert about_run
    assert all(line["worker_id"] == "ops-worker" for line in about_run)
    assert any(line.get("run_id") == run["id"] for line in gateway_lines)

    everything = ops_stack.gateway.log() + ops_stack.worker.log()
    for secret in (ops_stack.admin_key, ops_stack.worker_key, ops_stack.provider_key):
        assert secret not in everything


async def _async(value: Any) -> Any:
    return value
