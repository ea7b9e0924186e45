"""The audit trail's events and the keyed chain that makes tampering evident.

Per project, events are linked in chain order: `hash = HMAC-SHA-256(key, prev_hash ‖
canonical JSON of the event)`, starting from `GENESIS`, and each link names the id of
its key (`services.contract.audit_keys`). The canonical JSON covers every recorded field
of the event (not the chain fields), with sorted keys and no spaces, so the same event
always hashes the same way — in the gateway, in `ferrumdeck audit verify`, and offline
over an export. Changing, removing or reordering anything breaks the chain at the first
link affected, and without the key nobody can compute the links again.

Chains begun before links were keyed start with plain `sha256(prev_hash ‖ JSON)` links
(no key id). Those verify as they were; the first keyed link chains from the last of
them, so it vouches for that whole unkeyed prefix, and no unkeyed link may follow a
keyed one.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterable
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field

from services.contract.audit_keys import AuditKeys

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
    key_id: str | None = None


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
    unkeyed: int = Field(
        default=0,
        description="Links made before the chain was keyed (plain SHA-256, first in it).",
    )
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


def unkeyed_link_hash(prev_hash: str, event: AuditEvent) -> str:
    """A link of a chain begun before links were keyed."""
    return hashlib.sha256(prev_hash.encode() + canonical_json(event)).hexdigest()


def link_hash(keys: AuditKeys, prev_hash: str, event: AuditEvent) -> str:
    """The link the chainer makes now, under the current key."""
    return hmac.new(keys.current, prev_hash.encode() + canonical_json(event), "sha256").hexdigest()


class ChainCheck:
    """Checks one project's links one at a time, in chain order, holding only the last:
    a chain of any length verifies in constant memory."""

    def __init__(self, keys: AuditKeys | None) -> None:
        self._keys = keys
        self._prev = GENESIS
        self._keyed = False
        self.events = 0
        self.unkeyed = 0

    def add(self, event: AuditEvent) -> BrokenLink | None:
        """The problem with this link, or None when it follows from the ones before."""
        self.events += 1
        expected_seq = self.events
        problem = None
        if event.seq != expected_seq:
            problem = f"expected link {expected_seq}, found {event.seq}: an event is missing"
        elif event.prev_hash != self._prev:
            problem = "prev_hash does not match the previous link: the chain was altered"
        else:
            problem = self._check_hash(event)
        if problem is not None:
            return BrokenLink(id=event.id, seq=event.seq, reason=problem)
        self._prev = event.hash or ""
        return None

    def _check_hash(self, event: AuditEvent) -> str | None:
        message = self._prev.encode() + canonical_json(event)
        if event.key_id is None:
            if self._keyed:
                return "an unkeyed link after keyed ones: the chain was rewritten"
            self.unkeyed += 1
            expected = hashlib.sha256(message).hexdigest()
        else:
            if self._keys is None:
                return "the link is keyed and no audit key was given to check it"
            found = self._keys.mac(event.key_id, message)
            if found is None:
                return f"the link is keyed by {event.key_id}, a key not among those given"
            self._keyed, expected = True, found
        if event.hash is None or not hmac.compare_digest(event.hash, expected):
            return "hash does not match the event's contents: the event was altered"
        return None

    def result(self, broken: BrokenLink | None = None) -> Verification:
        return Verification(
            intact=broken is None, events=self.events, unkeyed=self.unkeyed, first_broken=broken
        )


def verify(events: Iterable[AuditEvent], keys: AuditKeys | None) -> Verification:
    """Check chained events of one project, given in chain order (by `seq`)."""
    check = ChainCheck(keys)
    for event in events:
        broken = check.add(event)
        if broken is not None:
            return check.result(broken)
    return check.result()
