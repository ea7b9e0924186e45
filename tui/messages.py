"""Messages the app posts to its screens, so each screen reacts to the live feed itself."""

from __future__ import annotations

from textual.message import Message

from services.client import LiveEvent


class LiveUpdate(Message):
    """An event from the gateway's feed, or the client's own connection signal."""

    def __init__(self, event: LiveEvent) -> None:
        super().__init__()
        self.event = event
