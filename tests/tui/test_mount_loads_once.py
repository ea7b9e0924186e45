"""A screen loads what it shows once as it mounts, not once per class that handles the
mount: Textual calls each class's own `on_mount`, and the screens also called their
base's, so every screen made its first requests twice."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.tui.conftest import until
from tui.app import FerrumDeckApp
from tui.screens.approvals import ApprovalsScreen

Deck = Callable[..., FerrumDeckApp]


async def test_a_screen_loads_once_when_it_mounts(
    deck: Deck, monkeypatch: pytest.MonkeyPatch
) -> None:
    loads: list[ApprovalsScreen] = []
    real = ApprovalsScreen.load

    async def counted(self: ApprovalsScreen) -> None:
        loads.append(self)
        await real(self)

    monkeypatch.setattr(ApprovalsScreen, "load", counted)
    monkeypatch.setattr(ApprovalsScreen, "on_screen_resume", lambda self: None)
    app = deck()
    async with app.run_test(size=(140, 40)) as pilot:
        await until(pilot, lambda: app.connection == "live")
        await pilot.press("4")
        await until(pilot, lambda: len(loads) >= 1)
        await pilot.pause(0.5)
        assert len(loads) == 1
