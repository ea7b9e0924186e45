"""The dev stack's audit keys: made once under the stack's home and kept, so the chain
its gateway links (and the checkpoints of it) still verify after a restart, and never
in the database."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from services.contract.audit_checkpoint import generate_signing_key
from services.contract.audit_mac import EventSeal
from services.gateway.settings import GatewaySettings

AUDIT_KEY_FILE = "audit.key"
SIGNING_KEY_FILE = "audit-signing.pem"


def audit_key_settings(home: Path) -> dict[str, str]:
    """The variables that give the stack's processes the audit key and the checkpoint
    signing key: the operator's own when set, else files under `home`, written the
    first time."""
    found: dict[str, str] = {}
    if not os.environ.get("FERRUMDECK_AUDIT_KEY"):
        configured = os.environ.get("FERRUMDECK_AUDIT_KEY_FILE")
        path = Path(configured) if configured else home / AUDIT_KEY_FILE
        if not configured and not path.exists():
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(descriptor, "w") as key_file:
                key_file.write(secrets.token_urlsafe(32) + "\n")
        found["FERRUMDECK_AUDIT_KEY_FILE"] = str(path)
    configured = os.environ.get("FERRUMDECK_AUDIT_SIGNING_KEY_FILE")
    signing = Path(configured) if configured else home / SIGNING_KEY_FILE
    if not configured and not signing.exists():
        generate_signing_key(signing)
    found["FERRUMDECK_AUDIT_SIGNING_KEY_FILE"] = str(signing)
    return found


def audit_seal(found: dict[str, str]) -> EventSeal:
    """What the stack's own set-up seals its audit events with: the key its gateway gets."""
    key_file = found.get("FERRUMDECK_AUDIT_KEY_FILE")
    settings = GatewaySettings(audit_key_file=Path(key_file)) if key_file else GatewaySettings()
    return EventSeal(settings.audit_keys())
