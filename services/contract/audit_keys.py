"""The secret keys the audit chain's links are HMACs under.

The database holds no key, so whoever can write to it, even as its superuser, cannot
compute a link that verifies: rewriting history and recomputing the chain is no longer
enough. A key is known by an id derived from it (a link records the id of the key it was
made under), so rotating is adding a key in front: the first key links from then on,
and the others still verify the links made under them. Both the gateway and the offline
verifier of exports read keys this way, hence the contract package.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from dataclasses import dataclass

MIN_KEY_CHARS = 32
_KEY_ID_CONTEXT = b"ferrumdeck audit key id\x00"


class AuditKeyError(ValueError):
    """No usable key: said in one line, naming the setting to fix."""


def key_id(secret: bytes) -> str:
    """A name for the key that reveals nothing usable about it."""
    return hashlib.sha256(_KEY_ID_CONTEXT + secret).hexdigest()[:16]


@dataclass(frozen=True)
class AuditKeys:
    """The current key (links are made under it) and every key that still verifies."""

    current_id: str
    by_id: dict[str, bytes]

    @classmethod
    def of(cls, secrets: Iterable[str]) -> AuditKeys:
        """Keys in order, the current one first (a key file's lines, or a comma-separated
        setting): rotation adds the new key in front and keeps the old ones after it."""
        keys = [s.strip() for s in secrets if s.strip()]
        if not keys:
            raise AuditKeyError("no audit key given")
        short = [n for n, k in enumerate(keys, 1) if len(k) < MIN_KEY_CHARS]
        if short:
            raise AuditKeyError(
                f"audit key {short[0]} is shorter than {MIN_KEY_CHARS} characters; "
                "generate one with: python -c 'import secrets; print(secrets.token_urlsafe(32))'"
            )
        encoded = [k.encode() for k in keys]
        return cls(key_id(encoded[0]), {key_id(k): k for k in encoded})

    @property
    def current(self) -> bytes:
        return self.by_id[self.current_id]

    def mac(self, key: str, message: bytes) -> str | None:
        """HMAC-SHA-256 of `message` under the key with id `key`; None for a key not held."""
        secret = self.by_id.get(key)
        if secret is None:
            return None
        return hmac.new(secret, message, hashlib.sha256).hexdigest()
