"""Which database the administrative commands (`keys`, `audit`, `migrate`,
`projects`) talk to.

`FERRUMDECK_DATABASE_URL` when set; otherwise, run from a checkout where `make dev` is
running, the dev stack's own database (it writes `.ferrumdeck/server.env`); otherwise the
configured default.
"""

from __future__ import annotations

import os
from pathlib import Path

from services.gateway.settings import GatewaySettings

DEV_SERVER_ENV = Path(".ferrumdeck") / "server.env"


def database_url() -> str:
    if "FERRUMDECK_DATABASE_URL" not in os.environ and DEV_SERVER_ENV.exists():
        for line in DEV_SERVER_ENV.read_text().splitlines():
            name, _, value = line.partition("=")
            if name.strip() == "FERRUMDECK_DATABASE_URL":
                return value.strip()
    return GatewaySettings().database_url
