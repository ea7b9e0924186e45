"""A worker that died without withdrawing its tools drops out of `GET /v1/tools` once it
has not reported them for `LISTING_TTL_SECONDS`; one a minute late is still listed."""

from __future__ import annotations

import asyncpg

from services.gateway.store.tools import LISTING_TTL_SECONDS
from tests.support.harness import ToolHarness, tool_spec


async def _listed(harness: ToolHarness) -> set[str]:
    response = await harness.client.get("/v1/tools", headers=harness.admin)
    return {tool["name"] for tool in (await response.get_json())["items"]}


async def _reported_ago(db: asyncpg.Pool, worker_id: str, seconds: float) -> None:
    await db.execute(
        "UPDATE worker_tools SET reported_at = now() - make_interval(secs => $2) "
        "WHERE worker_id = $1",
        worker_id,
        seconds,
    )


async def test_a_listing_not_reported_within_the_bound_ages_out(
    harness: ToolHarness, db: asyncpg.Pool
) -> None:
    await harness.list_tools("w-dead", tool_spec("gone.tool"))
    await harness.list_tools("w-late", tool_spec("late.tool"))
    assert {"gone.tool", "late.tool"} <= await _listed(harness)
    await _reported_ago(db, "w-dead", LISTING_TTL_SECONDS + 1)
    await _reported_ago(db, "w-late", LISTING_TTL_SECONDS - 60)
    listed = await _listed(harness)
    assert "gone.tool" not in listed
    assert "late.tool" in listed
