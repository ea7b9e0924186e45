"""`python -m tests.support.warm_start <gateway|worker>`: a FerrumDeck process started
ahead of time, imports done, that runs `ferrumdeck <command>` when a line arrives on
stdin (and exits quietly if stdin closes first: a spare nobody needed). It touches the
file `WARM_MARKER` names, if any, once its imports are done.

Importing LiteLLM alone takes a worker seconds of CPU (tens of seconds on a busy
two-core machine), which would make every restart in a chaos test that slow. A spare
process that has already imported everything restarts a killed part in about a second;
what runs after the go is the real command, with settings read from the environment
only then.
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path

from services.cli.main import main

MODULES = {"gateway": "services.gateway.serve", "worker": "services.worker.main"}

if __name__ == "__main__":
    command = sys.argv[1]
    importlib.import_module(MODULES[command])
    if marker := os.environ.get("WARM_MARKER"):
        Path(marker).touch()
    if sys.stdin.readline():
        sys.exit(main([command]))
