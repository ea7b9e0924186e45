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

Every event also carries its own MAC, made by the gateway as it appends it
(`services.contract.audit_mac`), so a row the application never wrote is reported even
once the chainer has linked it. Events from before MACs began have none; from the first
id that must (`mac_from`, recorded by the migration that began them) none may lack one.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field

from services.contract.audit_keys import AuditKeys
from services.contract.audit_mac import EventSeal, event_message

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
    mac_key_id: str | None = None
    mac: str | None = None


class AuditPage(BaseModel):
    items: list[AuditEvent]
    next_cursor: str | None


class BrokenLink(BaseModel):
    id: int
    seq: int | None
    reason: str


class CheckpointFailure(BaseModel):
    seq: int
    hash: str
    reason: str


class Verification(BaseModel):
    intact: bool
    events: int
    unchained: int = 0
    unkeyed: int = Field(
        default=0,
        description="Links made before the chain was keyed (plain SHA-256, first in it).",
    )
    without_mac: int = Field(
        default=0, description="Events appended before events carried MACs (none since)."
    )
    first_broken: BrokenLink | None
    checkpoints: int = Field(default=0, description="Signed checkpoints the chain was held to.")
    checkpoint_failure: CheckpointFailure | None = Field(
        default=None,
        description="The first checkpointed head the chain no longer has: cut off, or "
        "rewritten at or before it.",
    )


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


def event_message_of(event: AuditEvent) -> bytes:
    """What the event's MAC covers: every field the gateway wrote, but the id."""
    return event_message(
        project=event.project,
        actor=event.actor,
        actor_kind=event.actor_kind.value,
        action=event.action,
        target=event.target,
        details=event.details,
        request_id=event.request_id,
        created_at=event.created_at,
    )


def unkeyed_link_hash(prev_hash: str, event: AuditEvent) -> str:
    """A link of a chain begun before links were keyed."""
    return hashlib.sha256(prev_hash.encode() + canonical_json(event)).hexdigest()


def link_hash(keys: AuditKeys, prev_hash: str, event: AuditEvent) -> str:
    """The link the chainer makes now, under the current key."""
    return hmac.new(keys.current, prev_hash.encode() + canonical_json(event), "sha256").hexdigest()


class ChainCheck:
    """Checks one project's links one at a time, in chain order, holding only the last:
    a chain of any length verifies in constant memory. `heads` are checkpointed links
    (seq to hash) the chain must still have; from event id `mac_from` on every event
    must carry a valid MAC. Without `mac_from` (an export checked offline) it is learnt:
    no event may lack a MAC once one with a lower id had one."""

    def __init__(
        self,
        keys: AuditKeys | None,
        heads: Mapping[int, str] | None = None,
        *,
        mac_from: int | None = None,
    ) -> None:
        self._keys = keys
        self._seal = None if keys is None else EventSeal(keys)
        self._mac_from = mac_from
        self._heads = dict(heads or {})
        self._prev = GENESIS
        self._keyed = False
        self.events = 0
        self.unkeyed = 0
        self.without_mac = 0
        self.broken: BrokenLink | None = None
        self.checkpoint_failure: CheckpointFailure | None = None

    def resume(self, seq: int, hash_: str, *, keyed: bool) -> None:
        """Go on from a link already vouched for (a checkpointed head) instead of GENESIS;
        heads before it are not walked, so not held against the chain."""
        self.events, self._prev, self._keyed = seq, hash_, keyed
        self._heads = {s: h for s, h in self._heads.items() if s > seq}

    def add(self, event: AuditEvent) -> bool:
        """Check the next link; False once the chain is found broken (stop walking)."""
        self.events += 1
        expected_seq = self.events
        problem = None
        if event.seq != expected_seq:
            problem = f"expected link {expected_seq}, found {event.seq}: an event is missing"
        elif event.prev_hash != self._prev:
            problem = "prev_hash does not match the previous link: the chain was altered"
        else:
            problem = self._check_hash(event) or self._check_mac(event)
        if problem is not None:
            self.broken = BrokenLink(id=event.id, seq=event.seq, reason=problem)
            return False
        self._prev = event.hash or ""
        checkpointed = self._heads.pop(expected_seq, None)
        if checkpointed is not None and checkpointed != self._prev:
            self.checkpoint_failure = CheckpointFailure(
                seq=expected_seq,
                hash=checkpointed,
                reason=f"the link at seq {expected_seq} is not the checkpointed one: the "
                f"chain was rewritten at or before seq {expected_seq}",
            )
            return False
        return True

    def gone(self, event_id: int, seq: int) -> None:
        """The link at `seq` names an event that is no longer there."""
        self.events += 1
        self.broken = BrokenLink(id=event_id, seq=seq, reason="the event of this link is gone")

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

    def _check_mac(self, event: AuditEvent) -> str | None:
        required = self._mac_from is not None and event.id >= self._mac_from
        if event.mac is None and not required:
            self.without_mac += 1
            return None
        if self._seal is None:
            return "the event carries a MAC and no audit key was given to check it"
        problem = self._seal.problem(
            event.mac_key_id, event.mac, event_message_of(event), required=required
        )
        if problem is None and (self._mac_from is None or event.id < self._mac_from):
            self._mac_from = event.id
        return problem

    def result(self, checkpoints: int = 0) -> Verification:
        """The verdict; a checkpointed head beyond the chain's end means events were cut."""
        failure = self.checkpoint_failure
        if failure is None and self.broken is None and self._heads:
            seq = min(self._heads)
            failure = CheckpointFailure(
                seq=seq,
                hash=self._heads[seq],
                reason=f"the chain ends at seq {self.events}, before the checkpointed head at "
                f"seq {seq}: its newest events were cut off",
            )
        return Verification(
            intact=self.broken is None and failure is None,
            events=self.events,
            unkeyed=self.unkeyed,
            without_mac=self.without_mac,
            first_broken=self.broken,
            checkpoints=checkpoints,
            checkpoint_failure=failure,
        )


def verify(
    events: Iterable[AuditEvent],
    keys: AuditKeys | None,
    heads: Mapping[int, str] | None = None,
    *,
    mac_from: int | None = None,
) -> Verification:
    """Check chained events of one project, given in chain order (by `seq`), against
    the checkpointed `heads` (seq to hash) too."""
    check = ChainCheck(keys, heads, mac_from=mac_from)
    for event in events:
        if not check.add(event):
            break
    return check.result(len(heads or {}))
