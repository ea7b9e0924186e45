"""What every mode screen shares: the nav bar, the footer, and its place in the live feed.

A screen registers with the app while mounted and receives the live events a few times
a second as a `LiveUpdate` message: `on_live` sees each, then `on_live_batch_end` once.
After any gap in the feed (`reconnected`, `resync`) it reloads what it shows, because
the gateway keeps no history to replay. Reloads asked for while
one runs are folded into one more after it (`SingleFlight`), never a cancelled request.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, cast

from textual.app import ComposeResult
from textual.screen import Screen
from textual.widgets import Footer

from services.client import RECONNECTED, FerrumDeckError, LiveEvent
from services.contract.events import EventName
from tui.messages import LiveUpdate
from tui.single_flight import SingleFlight
from tui.widgets.nav_bar import NavBar

if TYPE_CHECKING:
    from tui.app import FerrumDeckApp


class DeckScreen(Screen[None]):
    MODE: ClassVar[str]
    LIST: ClassVar[str | None] = None
    """The screen's list, focused whenever the screen shows, so keys move in it at once
    (not in the filter last typed in, where Enter would open a dropdown)."""

    def compose(self) -> ComposeResult:
        yield NavBar(self.MODE)
        yield from self.compose_body()
        yield Footer()

    def compose_body(self) -> ComposeResult:
        raise NotImplementedError

    @property
    def deck(self) -> FerrumDeckApp:
        return cast("FerrumDeckApp", self.app)

    def on_mount(self) -> None:
        """Textual calls every class's own `on_mount`, the subclass's first, so a screen's
        state is set before this loads it; a subclass must not call it again (it did, and
        each screen loaded twice as it mounted)."""
        self._reloader = SingleFlight(self, self.load, "load")
        self.deck.listeners.add(self)
        self.reload()

    def on_screen_resume(self) -> None:
        if self.LIST is not None:
            self.query_one(self.LIST).focus()

    def on_unmount(self) -> None:
        self.deck.listeners.discard(self)

    def on_live_update(self, message: LiveUpdate) -> None:
        for event in message.events:
            if event.name in (RECONNECTED, EventName.RESYNC):
                self.reload()
            else:
                self.on_live(event)
        self.on_live_batch_end()

    def on_live(self, event: LiveEvent) -> None:
        """React to one live event; by default nothing."""

    def on_live_batch_end(self) -> None:
        """Show what the events of one update changed; by default nothing."""

    def reload(self) -> None:
        """Fetch what the screen shows, from scratch, in a worker."""
        self._reloader.request()

    async def load(self) -> None:
        """What `reload` runs; by default nothing."""

    def report(self, error: FerrumDeckError) -> None:
        self.deck.report(error)
