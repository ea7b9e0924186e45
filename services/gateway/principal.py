"""Who a request acts as: the API key it presented, with its role and project.

A module of its own because the key cache stores principals and authentication reads
them through the cache: neither may import the other."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from services.contract.api import Role


@dataclass(frozen=True)
class Principal:
    key_id: uuid.UUID
    name: str
    role: Role
    project: str | None
