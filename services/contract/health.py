"""What `/readyz` answers on both planes: one shape, so a probe, a load balancer or an
operator's curl reads a gateway and a worker alike (200 when ready, else 503)."""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, Field


class Liveness(BaseModel):
    """What `/healthz` answers while the process runs, whatever it can reach."""

    status: Literal["ok"] = "ok"


class ReadyStatus(StrEnum):
    READY = "ready"
    NOT_READY = "not_ready"


class Readiness(BaseModel):
    status: ReadyStatus
    problems: list[str] = Field(
        default_factory=list, description="Why it cannot do useful work now; empty when ready."
    )
