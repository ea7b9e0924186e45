"""Lease tokens: the proof, besides the epoch and the worker key, that a callback comes
from the process that claimed the lease.

Workers of a fleet usually share one worker key, so a key alone cannot tell one of them
from another, or from someone who copied the key. The claim therefore mints 32 random
bytes, hands them to the claiming worker once and keeps only their SHA-256 digest
(`runs.lease_token_digest`): a database dump holds no usable token. A callback's token
is compared with `hmac.compare_digest`, so how long a refusal takes says nothing about
how much of a guess was right.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from services.contract.worker_api import LEASE_TOKEN_CHARS


def mint() -> tuple[str, bytes]:
    """A fresh token, and the digest to store in its place."""
    token = secrets.token_urlsafe(32)
    assert len(token) == LEASE_TOKEN_CHARS
    return token, digest(token)


def digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def matches(stored: bytes | None, token: str) -> bool:
    """Whether `token` is the one whose digest the lease keeps (never, for a lease
    claimed before tokens existed)."""
    return stored is not None and hmac.compare_digest(stored, digest(token))
