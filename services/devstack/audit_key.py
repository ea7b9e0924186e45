"""The dev stack's audit key: made once under the stack's home and kept, so the chain
its gateway links still verifies after a restart, and never in the database."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

AUDIT_KEY_FILE = "audit.key"


def audit_key_settings(home: Path) -> dict[str, str]:
    """The variables that give the stack's processes the audit key: the operator's own
    when set, else a key file under `home`, written the first time."""
    if os.environ.get("FERRUMDECK_AUDIT_KEY"):
        return {}
    configured = os.environ.get("FERRUMDECK_AUDIT_KEY_FILE")
    if configured:
        return {"FERRUMDECK_AUDIT_KEY_FILE": configured}
    path = home / AUDIT_KEY_FILE
    if not path.exists():
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as key_file:
            key_file.write(secrets.token_urlsafe(32) + "\n")
    return {"FERRUMDECK_AUDIT_KEY_FILE": str(path)}
