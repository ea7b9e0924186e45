"""The job message on the runs stream, and the names of the stream and its group.

A job carries only the run id, why it was published and the run's project; the worker
learns everything else when it claims the run, so a duplicate or stale message can do no
harm. The project is a scheduling hint only (whose turn the claim waits for in the
worker, `worker/fair_slots.py`): what the run may do is decided from the claim's answer,
never from the stream.
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
    project: str = ""
    """Empty in jobs published before projects were carried: they wait as one more project."""

    def to_fields(self) -> dict[str, str]:
        return {"run_id": str(self.run_id), "reason": self.reason.value, "project": self.project}

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

    def run_tokens(self, run_id: uuid.UUID) -> str:
        """A run's tokens as the model writes them: short-lived, bounded, never durable."""
        return f"{self.prefix}:run:{run_id}:tokens"

    def run_watched(self, run_id: uuid.UUID) -> str:
        """Set while someone follows the run's stream: its workers then publish tokens."""
        return f"{self.prefix}:run:{run_id}:watched"

    @property
    def dead_letter(self) -> str:
        """Entries no worker could finish after `max_deliveries` tries, kept for operators."""
        return f"{self.prefix}:runs:dead"


class DeadLetter(BaseModel):
    """An entry of the dead-letter stream: the job as it was, and why it was set aside.

    `run_id` is None when the entry itself was unreadable; `fields` then holds what it
    carried, so nothing is lost.
    """

    model_config = ConfigDict(extra="ignore", frozen=True)

    run_id: uuid.UUID | None
    reason: str
    deliveries: int
    source_id: str
    worker_id: str
    fields: str

    def to_fields(self) -> dict[str, str]:
        return {
            "run_id": "" if self.run_id is None else str(self.run_id),
            "reason": self.reason,
            "deliveries": str(self.deliveries),
            "source_id": self.source_id,
            "worker_id": self.worker_id,
            "fields": self.fields,
        }

    @classmethod
    def from_fields(cls, fields: dict[bytes, bytes] | dict[str, str]) -> DeadLetter:
        decoded: dict[str, str | None] = {
            (k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
            for k, v in fields.items()
        }
        decoded["run_id"] = decoded.get("run_id") or None
        return cls.model_validate(decoded)
