"""What each screen looks like, as SVG snapshots of fixed data at a frozen time.

Update after a deliberate change with `pytest tests/tui --snapshot-update` and review the
SVGs in `__snapshots__/` like code.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from textual.pilot import Pilot
from textual.widgets import DataTable, Sparkline, Static

from services.client import AsyncFerrumDeck
from services.devstack.embedded import free_port
from services.gateway.db.connections import connect
from services.gateway.db.migrations import migrate
from testbed import servers
from testbed.processes import Service, wait_until
from tests.support.sealing import SEAL
from tests.tui import seeded
from tests.tui.conftest import text_of, until
from tui.app import FerrumDeckApp
from tui.widgets.run_list import RunList

Compare = Callable[..., bool]


@dataclass(frozen=True)
class Gateway:
    url: str
    key: str


@pytest.fixture(scope="module")
async def gateway(
    scratch: Path, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Gateway]:
    """A gateway process over its own database holding only the seeded history."""
    async with (
        servers.postgres_admin_dsn(scratch) as admin_dsn,
        servers.throwaway_database(admin_dsn) as dsn,
    ):
        conn = await connect(dsn, seal=SEAL)
        try:
            await migrate(conn)
            key = await seeded.seed(conn)
        finally:
            await conn.close()
        port = free_port()
        prefix = servers.unique_prefix()
        service = Service(
            "gateway",
            {
                "FERRUMDECK_DATABASE_URL": dsn,
                "FERRUMDECK_REDIS_URL": redis_url,
                "FERRUMDECK_STREAM_PREFIX": prefix,
                "FERRUMDECK_PORT": str(port),
            },
            tmp_path_factory.mktemp("snapshots") / "gateway.log",
        )
        try:
            await wait_until(f"http://127.0.0.1:{port}/readyz", 30, service)
            yield Gateway(f"http://127.0.0.1:{port}", key)
        finally:
            service.stop()
            await servers.delete_prefix(redis_url, prefix)


@pytest.fixture(params=[(80, 24), (160, 45)], ids=["80x24", "160x45"])
def size(request: pytest.FixtureRequest) -> tuple[int, int]:
    """The smallest terminal an operator uses, and a large one."""
    value: tuple[int, int] = request.param
    return value


def deck(gateway: Gateway) -> FerrumDeckApp:
    return FerrumDeckApp(AsyncFerrumDeck(gateway.url, gateway.key), clock=lambda: seeded.NOW)


def ready(
    then: Callable[[Pilot[None]], Awaitable[None]],
) -> Callable[[Pilot[None]], Awaitable[None]]:
    """Wait for the feed, the badge and two queue samples, then do `then`."""

    async def run_before(pilot: Pilot[None]) -> None:
        app = pilot.app
        assert isinstance(app, FerrumDeckApp)
        await until(pilot, lambda: app.connection == "live" and app.pending == "1")
        await until(pilot, lambda: len(app.queue_history) >= 2)
        await then(pilot)
        await pilot.pause()

    return run_before


async def dashboard_loaded(pilot: Pilot[None]) -> None:
    screen = pilot.app.screen
    await until(pilot, lambda: "throughput" in text_of(screen.query_one("#run-numbers", Static)))
    await until(pilot, lambda: len(screen.query_one("#depth", Sparkline).data or []) >= 2)


def test_dashboard(gateway: Gateway, snap_compare: Compare, size: tuple[int, int]) -> None:
    assert snap_compare(deck(gateway), terminal_size=size, run_before=ready(dashboard_loaded))


def test_runs(gateway: Gateway, snap_compare: Compare, size: tuple[int, int]) -> None:
    async def loaded(pilot: Pilot[None]) -> None:
        await pilot.press("2")
        await until(pilot, lambda: pilot.app.screen.query_one("#runs", RunList).row_count == 8)
        await pilot.press("down")

    assert snap_compare(deck(gateway), terminal_size=size, run_before=ready(loaded))


def test_run_detail(gateway: Gateway, snap_compare: Compare, size: tuple[int, int]) -> None:
    async def loaded(pilot: Pilot[None]) -> None:
        app = pilot.app
        assert isinstance(app, FerrumDeckApp)
        app.open_run(str(seeded.PARKED))
        await until(pilot, lambda: app.screen.query_one("#steps", DataTable).row_count == 2)

    assert snap_compare(deck(gateway), terminal_size=size, run_before=ready(loaded))


def test_approvals(gateway: Gateway, snap_compare: Compare, size: tuple[int, int]) -> None:
    async def loaded(pilot: Pilot[None]) -> None:
        await pilot.press("4")
        await until(
            pilot, lambda: pilot.app.screen.query_one("#approvals", DataTable).row_count == 1
        )

    assert snap_compare(deck(gateway), terminal_size=size, run_before=ready(loaded))


def test_reason_dialog(gateway: Gateway, snap_compare: Compare, size: tuple[int, int]) -> None:
    async def asking(pilot: Pilot[None]) -> None:
        await pilot.press("4")
        await until(
            pilot, lambda: pilot.app.screen.query_one("#approvals", DataTable).row_count == 1
        )
        await pilot.press("r", *"not without a ticket")

    assert snap_compare(deck(gateway), terminal_size=size, run_before=ready(asking))


def test_audit(gateway: Gateway, snap_compare: Compare, size: tuple[int, int]) -> None:
    async def filtered(pilot: Pilot[None]) -> None:
        await pilot.press("5", "f", "tab", "tab", "tab", "tab", *"2000-01-01", "enter")
        event = lambda: text_of(pilot.app.screen.query_one("#audit-event", Static))  # noqa: E731
        await until(pilot, lambda: "No audit events" in event())

    assert snap_compare(deck(gateway), terminal_size=size, run_before=ready(filtered))


def test_help(gateway: Gateway, snap_compare: Compare, size: tuple[int, int]) -> None:
    async def helping(pilot: Pilot[None]) -> None:
        await dashboard_loaded(pilot)
        await pilot.press("question_mark")

    assert snap_compare(deck(gateway), terminal_size=size, run_before=ready(helping))
