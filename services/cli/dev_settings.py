"""The settings a running dev stack gave its processes, for `ferrumdeck config`.

`ferrumdeck dev` picks the database, Redis, ports, worker key and id itself and passes
them to the gateway and worker in their environment, so defaults are not what they run
with. It writes those settings to `<home>/processes.env` (`FERRUMDECK_HOME`, else
`.ferrumdeck` here); `config` reads them under the environment, in the order every
subcommand discovers its settings: flags, then the environment (and the env file), then
the dev stack, then the defaults.
"""

from __future__ import annotations

import os
from pathlib import Path

from services.cli import env_file


def processes_env() -> Path:
    from services.devstack.stack import PROCESSES_ENV

    return Path(os.environ.get("FERRUMDECK_HOME", ".ferrumdeck")) / PROCESSES_ENV


def apply() -> Path | None:
    """Put the dev stack's settings into the environment where it has none; the file
    read, if there is one."""
    path = processes_env()
    if not path.is_file():
        return None
    try:
        values = env_file.parse(path.read_text())
    except env_file.EnvFileError as exc:
        raise env_file.EnvFileError(f"{path}: {exc}") from exc
    for name, value in values.items():
        os.environ.setdefault(name, value)
    return path
