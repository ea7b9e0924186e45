"""PostgreSQL away from the gateway for a few seconds under load: clients get clean 503s
with `Retry-After` (never a 500), the same gateway process serves again once the
database is back, and no run it accepted is lost."""

from __future__ import annotations

import asyncio
from collections import Counter

import httpx
import pytest

from tests.chaos.driving import accepted_more, under_load
from tests.chaos.invariants import assert_invariants
from tests.support.chaos_load import Workload
from tests.support.chaos_stack import ChaosStack

OUTAGE_SECONDS = 5


async def test_clients_get_503_with_retry_after_while_postgres_is_away_and_no_run_is_lost(
    chaos: ChaosStack,
) -> None:
    proxy = chaos.db_proxy
    if proxy is None:
        pytest.skip("PostgreSQL listens on a Unix socket here: there is no link to cut")
    assert chaos.gateway.current is not None
    gateway_pid = chaos.gateway.current.process.pid
    agent = await chaos.agent("db-away")
    work = Workload(chaos.llm, "db-away")
    reads: Counter[tuple[int, str | None, str | None]] = Counter()

    async def read_while(stop: asyncio.Event) -> None:
        """An operator's deck refreshing the runs list through the outage."""
        while not stop.is_set():
            try:
                response = await chaos.api.get("/v1/runs?limit=5")
            except httpx.TransportError as exc:
                reads[(0, type(exc).__name__, None)] += 1
            else:
                code = response.json().get("error", {}).get("code")
                reads[(response.status_code, code, response.headers.get("Retry-After"))] += 1
            await asyncio.sleep(0.1)

    stop_reading = asyncio.Event()
    reader = asyncio.create_task(read_while(stop_reading))
    try:
        async with under_load(chaos, agent, work.mixed) as integration:
            await accepted_more(integration, 6)
            await proxy.cut()
            await asyncio.sleep(OUTAGE_SECONDS)
            await proxy.restore()
            await accepted_more(integration, 6)
    finally:
        stop_reading.set()
        await reader

    assert chaos.gateway.current.process.pid == gateway_pid
    assert chaos.gateway.alive
    outage = {key for key in reads if key[0] == 503}
    assert outage, f"no 503 seen while the database was away: {reads}"
    assert all(code == "database_unavailable" and after for _, code, after in outage), reads
    assert set(reads) - outage <= {(200, None, None)}, f"not a 200 nor a clean 503: {reads}"
    assert 503 in integration.seen, integration.seen
    assert set(integration.seen) <= {202, 503}, integration.seen
    assert all(after is not None for after in integration.retry_after)
    await assert_invariants(chaos, integration.accepted, [agent])
