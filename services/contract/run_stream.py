"""One run followed as it happens (`GET /v1/runs/{id}/stream`): its events and their ids.

Shared by the gateway that sends them and the client that reads them. A run's stream
says three things: `token` (text the model has written so far of the step being made,
a preview that is not stored), `step` (a step as it was recorded, the durable truth, so
it supersedes the tokens of its seq) and `end` (the finished run; nothing follows).

A retried model call writes its text again from the start: its tokens carry a new
`attempt` (a retry within the same lease) or `epoch` (another worker took the run over),
and a reader showing a growing answer starts it again when either changes.

An event's id is the position after it, `<last step seq sent>:<last token entry id>`;
`Last-Event-ID` resumes after it, so a reconnecting client gets each event once. The
`end` event's id is `end`: resuming after it answers 204, which tells a browser's
`EventSource` to stop reconnecting.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from pydantic import BaseModel

from services.contract.api import Run, Step


class RunStreamEvent(StrEnum):
    TOKEN = "token"
    STEP = "step"
    END = "end"


class TokenDelta(BaseModel):
    step: int
    """The seq the step being written will be recorded as."""
    delta: str
    epoch: int
    attempt: int


class StepRecorded(BaseModel):
    step: Step


class RunEnded(BaseModel):
    run: Run


END_ID = "end"
_POSITION = re.compile(r"(\d{1,9}):(\d{1,20})-(\d{1,20})")


@dataclass(frozen=True, order=True)
class StreamPosition:
    """Where a client is in a run's stream: the steps it has, and the token entries."""

    step: int = 0
    entry: tuple[int, int] = (0, 0)

    @property
    def entry_id(self) -> str:
        return f"{self.entry[0]}-{self.entry[1]}"

    def __str__(self) -> str:
        return f"{self.step}:{self.entry_id}"

    @classmethod
    def parse(cls, text: str) -> StreamPosition:
        """The position an event id names; ValueError for anything else."""
        found = _POSITION.fullmatch(text.strip())
        if found is None:
            raise ValueError(f"not a run stream position: {text[:80]!r}")
        return cls(int(found[1]), (int(found[2]), int(found[3])))


def entry_of(entry_id: str) -> tuple[int, int]:
    """A Redis stream entry id as the pair it orders by."""
    millis, _, seq = entry_id.partition("-")
    return int(millis), int(seq or 0)
