"""The audit trail's events and the hash chain that makes tampering evident.

Per project, events are linked in chain order: `hash = sha256(prev_hash ‖ canonical
JSON of the event)`, starting from `GENESIS`. The canonical JSON covers every recorded
field of the event (not the chain fields), with sorted keys and no spaces, so the same
event always hashes the same way — in the gateway, in `ferrumdeck audit verify`, and
offline over an export. Changing, removing or reordering anything breaks the chain at
the first link affected.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel

GENESIS = "0" * 64


class ActorKind(StrEnum):
    KEY = "key"
    WORKER = "worker"
    SYSTEM = "system"


class AuditEvent(BaseModel):
    id: int
    project: str
    actor: str
    actor_kind: ActorKind
    action: str
    target: str
    details: dict[str, Any]
    request_id: str | None
    created_at: datetime
    seq: int | None = None
    prev_hash: str | None = None
    hash: str | None = None


class AuditPage(BaseModel):
    items: list[AuditEvent]
    next_cursor: str | None


class BrokenLink(BaseModel):
    id: int
    seq: int | None
    reason: str


class Verification(BaseModel):
    intact: bool
    events: int
    unchained: int = 0
    first_broken: BrokenLink | None


def canonical_json(event: AuditEvent) -> bytes:
    fields = {
        "id": event.id,
        "project": event.project,
        "actor": event.actor,
        "actor_kind": event.actor_kind.value,
        "action": event.action,
        "target": event.target,
        "details": event.details,
        "request_id": event.request_id,
        "created_at": event.created_at.astimezone(UTC).isoformat(timespec="microseconds"),
    }
    return json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def link_hash(prev_hash: str, event: AuditEvent) -> str:
    return hashlib.sha256(prev_hash.encode() + canonical_json(event)).hexdigest()


def verify(events: Iterable[AuditEvent]) -> Verification:
    """Check chained events of one project, given in chain order (by `seq`)."""
    expected_prev, expected_seq, count = GENESIS, 1, 0
    for event in events:
        count += 1
        problem = None
        if event.seq != expected_seq:
            problem = f"expected link {expected_seq}, found {event.seq}: an event is missing"
        elif event.prev_hash != expected_prev:
            problem = "prev_hash does not match the previous link: the chain was altered"
        elif event.hash != link_hash(expected_prev, event):
            problem = "hash does not match the event's contents: the event was altered"
        if problem is not None:
            return Verification(
                intact=False,
                events=count,
                first_broken=BrokenLink(id=event.id, seq=event.seq, reason=problem),
            )
        expected_prev, expected_seq = link_hash(expected_prev, event), expected_seq + 1
    return Verification(intact=True, events=count, first_broken=None)
