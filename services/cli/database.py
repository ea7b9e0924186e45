"""Which database the administrative commands (`keys`, `audit`, `migrate`,
`projects`) talk to, the audit keys they check its chain with, and the key that signs
(or checks) checkpoints of it.

The environment (`FERRUMDECK_DATABASE_URL`, `FERRUMDECK_AUDIT_KEY` or
`FERRUMDECK_AUDIT_KEY_FILE`) when set; otherwise, run from a checkout where `make dev`
is running, the dev stack's own (it writes `.ferrumdeck/server.env`); otherwise the
configured default.
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from services.contract.audit_checkpoint import CheckpointError, CheckpointSigner, load_public_key
from services.contract.audit_keys import AuditKeys
from services.contract.audit_mac import EventSeal
from services.gateway.settings import GatewaySettings

DEV_SERVER_ENV = Path(".ferrumdeck") / "server.env"


def _dev_stack_value(name: str) -> str | None:
    if name in os.environ or not DEV_SERVER_ENV.exists():
        return None
    for line in DEV_SERVER_ENV.read_text().splitlines():
        key, _, value = line.partition("=")
        if key.strip() == name:
            return value.strip()
    return None


def database_url() -> str:
    return _dev_stack_value("FERRUMDECK_DATABASE_URL") or GatewaySettings().database_url


def audit_keys(key_file: Path | None = None) -> AuditKeys:
    """`key_file` when given, else the gateway's settings, else the dev stack's key file;
    AuditKeyError (one line, naming what to set) when there is none."""
    if key_file is not None:
        return GatewaySettings(audit_key=None, audit_key_file=key_file).audit_keys()
    settings = GatewaySettings()
    if settings.audit_key is None and settings.audit_key_file is None:
        dev_file = _dev_stack_value("FERRUMDECK_AUDIT_KEY_FILE")
        if dev_file and "FERRUMDECK_AUDIT_KEY" not in os.environ:
            return GatewaySettings(audit_key_file=Path(dev_file)).audit_keys()
    return settings.audit_keys()


def event_seal() -> EventSeal:
    """What a command that appends audit events seals them with (`audit_keys`)."""
    return EventSeal(audit_keys())


def checkpoint_signer(signing_key: Path | None = None) -> CheckpointSigner:
    """`signing_key` when given, else the gateway's setting, else the dev stack's key;
    CheckpointError (one line) when there is none."""
    if signing_key is None:
        configured = GatewaySettings().audit_signing_key_file
        dev_file = _dev_stack_value("FERRUMDECK_AUDIT_SIGNING_KEY_FILE")
        signing_key = configured or (Path(dev_file) if dev_file else None)
    return GatewaySettings(audit_signing_key_file=signing_key).checkpoint_signer()


def checkpoint_public_key(
    public_key: Path | None, signing_key: Path | None = None
) -> Ed25519PublicKey:
    """An outsider gives the public key; an operator holding the signing key needs not."""
    if public_key is not None:
        return load_public_key(public_key)
    try:
        return checkpoint_signer(signing_key).public
    except CheckpointError as exc:
        raise CheckpointError(f"give --public-key, or {exc}") from None
