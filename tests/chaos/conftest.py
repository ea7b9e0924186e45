"""One breakable stack for the whole chaos suite (starting workers costs seconds each).

Its timings are short so recovery fits in a test: 3 s leases, a sweeper every 0.5 s
re-publishing runs stalled for 3 s, entries reclaimed after 4 s idle, a job delivered
more than three times set aside as dead, a 5 s drain. It runs in a database of its own, because
its sweeper re-publishes every stale run it finds and must not find other tests' runs.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from testbed import servers
from tests.support.chaos_stack import ChaosStack, Tuning, chaos_stack

TUNING = Tuning(max_queue_lag=20)


@pytest.fixture(scope="package")
async def chaos(
    database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[ChaosStack]:
    admin_dsn = servers.database_dsn(database_url, "postgres")
    async with chaos_stack(
        tmp_path_factory.mktemp("chaos"), admin_dsn=admin_dsn, redis_url=None, tuning=TUNING
    ) as stack:
        yield stack


@pytest.fixture(autouse=True)
async def whole(chaos: ChaosStack) -> None:
    """Each scenario starts with every process up, whatever the previous one killed."""
    await chaos.up()
