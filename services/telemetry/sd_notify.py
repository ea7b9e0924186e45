"""systemd's readiness protocol (`Type=notify`), spoken directly.

The protocol is one datagram to the Unix socket named by `$NOTIFY_SOCKET`; that is too
little to justify a dependency. Without the variable (not under systemd) it does nothing.
"""

from __future__ import annotations

import os
import socket


def notify(state: str) -> bool:
    """Send `state` (`READY=1`, `STOPPING=1`, `STATUS=…`); True when a manager listens."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]  # an abstract-namespace socket
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        try:
            sock.connect(address)
            sock.sendall(state.encode())
        except OSError:
            return False
    return True
