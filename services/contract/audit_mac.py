"""A MAC on every audit event, made by the gateway as it appends the event.

The chain's links prove that linked events were not changed afterwards, but the chainer
links whatever row it finds: anyone who can `INSERT` into the trail (the gateway's own
database role, or the superuser) could add an event the application never wrote, and it
would be linked and verify. So each event carries `HMAC-SHA-256(event key, canonical
fields)` computed in Python before the insert, under a key the database does not hold;
the chainer and every verifier check it.

The event key is derived from each audit key with HKDF under its own label, so an
event's MAC and a link's HMAC are never computed under the same key: one can never be
passed off as the other. The MAC covers every recorded field but the id (the sequence
hands it out at insert) — `created_at` included, which the gateway now sets itself —
so a copy of a real row would verify; a unique index on the MAC refuses copies.

Numbers in `details` are put in one canonical form before they are MACed, because jsonb
keeps a number's digits, not Python's spelling of it (`1e+16` comes back as
`10000000000000000`): a value a caller chose must never turn into a false alarm.
"""

from __future__ import annotations

import hmac
import json
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from services.contract.audit_keys import AuditKeys

_EVENT_KEY_LABEL = b"ferrumdeck audit event mac v1"
_EXACT_INTEGERS = 2**53


@dataclass(frozen=True)
class Sealed:
    """What the gateway writes beside an event's fields: when, under which key, the MAC."""

    created_at: datetime
    key_id: str
    mac: str


def _canonical_number(value: int | float) -> int | str:
    if not math.isfinite(value):
        return repr(value)
    if value == int(value) and abs(value) < _EXACT_INTEGERS:
        return int(value)
    try:
        return repr(float(value))
    except OverflowError:
        return str(value)


def _canonical(value: Any) -> Any:
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return _canonical_number(value)
    if isinstance(value, dict):
        return {str(k): _canonical(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_canonical(v) for v in value]
    raise TypeError(f"audit details cannot hold {type(value).__name__}")


def event_message(
    *,
    project: str,
    actor: str,
    actor_kind: str,
    action: str,
    target: str,
    details: dict[str, Any],
    request_id: str | None,
    created_at: datetime,
) -> bytes:
    fields = {
        "project": project,
        "actor": actor,
        "actor_kind": actor_kind,
        "action": action,
        "target": target,
        "details": _canonical(details),
        "request_id": request_id,
        "created_at": created_at.astimezone(UTC).isoformat(timespec="microseconds"),
    }
    return json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


class EventSeal:
    """Seals events under the current audit key and checks them under any key held."""

    def __init__(self, keys: AuditKeys) -> None:
        self.keys = keys

    @cached_property
    def _event_keys(self) -> dict[str, bytes]:
        return {
            key_id: HKDF(hashes.SHA256(), 32, salt=None, info=_EVENT_KEY_LABEL).derive(secret)
            for key_id, secret in self.keys.by_id.items()
        }

    def mac(self, key_id: str, message: bytes) -> str | None:
        """The MAC of `message` under the event key of `key_id`; None for a key not held."""
        key = self._event_keys.get(key_id)
        return None if key is None else hmac.new(key, message, "sha256").hexdigest()

    def seal(
        self,
        *,
        project: str,
        actor: str,
        actor_kind: str,
        action: str,
        target: str,
        details: dict[str, Any],
        request_id: str | None,
        created_at: datetime | None = None,
    ) -> Sealed:
        at = created_at or datetime.now(UTC)
        message = event_message(
            project=project,
            actor=actor,
            actor_kind=actor_kind,
            action=action,
            target=target,
            details=json.loads(json.dumps(details)),
            request_id=request_id,
            created_at=at,
        )
        mac = self.mac(self.keys.current_id, message)
        assert mac is not None
        return Sealed(at, self.keys.current_id, mac)

    def problem(
        self, key_id: str | None, mac: str | None, message: bytes, *, required: bool
    ) -> str | None:
        """Why an event's MAC does not vouch for it, or None when it does (or when an
        event from before MACs began has none and none is `required`)."""
        if mac is None or key_id is None:
            if not required:
                return None
            return "the event carries no MAC: it was not written by a gateway"
        expected = self.mac(key_id, message)
        if expected is None:
            return f"the event's MAC is under {key_id}, a key not among those given"
        if not hmac.compare_digest(mac, expected):
            return "the event's MAC does not verify: it was not written by a gateway, or altered"
        return None
