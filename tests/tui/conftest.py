"""The deck against a real gateway: served by hypercorn in the test process for the
interactive tests, seeded through the public and worker APIs."""

from __future__ import annotations

import io
import time
from collections.abc import AsyncIterator, Callable

import pytest
from rich.console import Console
from textual.css.query import NoMatches
from textual.pilot import Pilot
from textual.widgets import Static

from services.client import AsyncFerrumDeck
from services.gateway.settings import GatewaySettings
from tests.support.gateway_server import ServedGateway, serve_gateway
from tui.app import FerrumDeckApp


@pytest.fixture
async def served(settings: GatewaySettings) -> AsyncIterator[ServedGateway]:
    async with serve_gateway(settings) as gateway:
        yield gateway


@pytest.fixture
def deck(served: ServedGateway, admin_key: str) -> Callable[..., FerrumDeckApp]:
    def make(url: str | None = None, key: str | None = None) -> FerrumDeckApp:
        return FerrumDeckApp(AsyncFerrumDeck(url or served.url, key or admin_key))

    return make


async def until(pilot: Pilot[None], condition: Callable[[], bool], within: float = 10) -> None:
    """Let the app run until `condition` holds, or fail; then let it lay out and paint
    what made it hold (a table's rows arrive before its columns are re-measured), so a
    snapshot taken next shows the settled screen."""
    deadline = time.monotonic() + within
    while not _holds(condition):
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {within}s")
        await pilot.pause(0.05)
    await pilot.wait_for_scheduled_animations()
    await pilot.pause()


def _holds(condition: Callable[[], bool]) -> bool:
    try:
        return condition()
    except NoMatches:  # the screen is still being built
        return False


def notifications(app: FerrumDeckApp) -> list[str]:
    return [n.message for n in app._notifications]


def text_of(widget: Static) -> str:
    """What a Static shows, as plain text."""
    console = Console(width=200, file=io.StringIO(), record=True)
    console.print(widget.content)
    return console.export_text()
