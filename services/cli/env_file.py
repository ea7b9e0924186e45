"""The optional env file: `FERRUMDECK_ENV_FILE`, else `.env` in the working directory.

Its variables are put into the process environment (never over ones already set), not
only into the settings, so provider keys such as `OPENAI_API_KEY` reach LiteLLM the same
way `honcho start` and systemd's `EnvironmentFile=` would deliver them. Setting
`FERRUMDECK_ENV_FILE` to the empty string reads no file at all, which is what tests and
service managers that already supply the environment should do.
"""

from __future__ import annotations

import os
from pathlib import Path

VARIABLE = "FERRUMDECK_ENV_FILE"


class EnvFileError(Exception):
    """The env file named by `FERRUMDECK_ENV_FILE` is missing or malformed."""


def chosen() -> Path | None:
    named = os.environ.get(VARIABLE)
    if named is not None:
        if not named:
            return None
        path = Path(named)
        if not path.is_file():
            raise EnvFileError(f"{VARIABLE}: no such file {named}")
        return path
    local = Path(".env")
    return local if local.is_file() else None


def parse(text: str) -> dict[str, str]:
    """`NAME=value` lines; `#` comments, `export ` prefixes and quotes as in a shell."""
    found: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        line = line.removeprefix("export ").lstrip()
        name, sep, value = line.partition("=")
        name = name.strip()
        if not sep or not name.isidentifier():
            raise EnvFileError(f"line {number}: expected NAME=value")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        else:
            value = value.split(" #", 1)[0].rstrip()
        found[name] = value
    return found


def apply() -> Path | None:
    """Load the chosen file into the environment; the file read, if any."""
    path = chosen()
    if path is None:
        return None
    try:
        values = parse(path.read_text())
    except EnvFileError as exc:
        raise EnvFileError(f"{path}: {exc}") from exc
    for name, value in values.items():
        os.environ.setdefault(name, value)
    return path
