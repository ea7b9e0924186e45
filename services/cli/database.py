"""Which database the administrative commands (`keys`, `audit`, `migrate`,
`projects`) talk to, and which audit keys they check its chain with.

The environment (`FERRUMDECK_DATABASE_URL`, `FERRUMDECK_AUDIT_KEY` or
`FERRUMDECK_AUDIT_KEY_FILE`) when set; otherwise, run from a checkout where `make dev`
is running, the dev stack's own (it writes `.ferrumdeck/server.env`); otherwise the
configured default.
"""

from __future__ import annotations

import os
from pathlib import Path

from services.contract.audit_keys import AuditKeys
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
