"""Messages the app posts to its screens, so each screen reacts to the live feed itself."""

from __future__ import annotations

from textual.message import Message

from services.client import LiveEvent


class LiveUpdate(Message):
    """The events of the gateway's feed (and the client's own connection signals) since
    the last update, in order: a burst arrives a few times a second, not per event."""

    def __init__(self, events: list[LiveEvent]) -> None:
        super().__init__()
        self.events = events
