"""The job message on the runs stream, and the names of the stream and its group.

A job carries only the run id and why it was published; the worker learns everything else
when it claims the run, so a duplicate or stale message can do no harm.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from enum import StrEnum

from pydantic import BaseModel, ConfigDict


class JobReason(StrEnum):
    CREATED = "created"
    REQUEUED = "requeued"


class JobMessage(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    run_id: uuid.UUID
    reason: JobReason

    def to_fields(self) -> dict[str, str]:
        return {"run_id": str(self.run_id), "reason": self.reason.value}

    @classmethod
    def from_fields(cls, fields: dict[bytes, bytes] | dict[str, str]) -> JobMessage:
        decoded = {
            (k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
            for k, v in fields.items()
        }
        return cls.model_validate(decoded)


@dataclass(frozen=True)
class StreamNames:
    """Every Redis key FerrumDeck uses hangs off one prefix, so test runs never collide."""

    prefix: str

    @property
    def runs(self) -> str:
        return f"{self.prefix}:runs"

    @property
    def group(self) -> str:
        return f"{self.prefix}:workers"
