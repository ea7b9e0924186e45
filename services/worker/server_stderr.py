"""A stdio MCP server's stderr, as the worker's own log records.

Inherited as it is, a server's stderr lands between the worker's JSON lines in its own
format (mcp-server-time logs with rich, boxes and all), unredacted and unparseable by
whatever reads the worker's log. Each line the server writes becomes one record of
logger `services.worker.server_stderr`, naming the server, so it goes through the same
JSON formatter and secret scrubbing as every other line.

The pipe is read by a thread: a server that writes a lot must never wait on, nor slow,
the event loop. Lines are cut at `MAX_LINE` bytes, so a server writing without newlines
cannot grow the worker's memory.
"""

from __future__ import annotations

import contextvars
import logging
import os
import threading
from typing import BinaryIO, TextIO

log = logging.getLogger(__name__)

MAX_LINE = 8192


class ServerStderr:
    """The write end (`errlog`) to give the server process; its lines are logged until
    the server and this object have both closed it."""

    def __init__(self, server: str) -> None:
        read_fd, write_fd = os.pipe()
        self.errlog: TextIO = os.fdopen(write_fd, "w")
        reader = os.fdopen(read_fd, "rb")
        context = contextvars.copy_context()  # the worker id, on the thread's records too
        self._thread = threading.Thread(
            target=context.run,
            args=(_relay, reader, server),
            name=f"mcp-stderr-{server}",
            daemon=True,
        )
        self._thread.start()

    def close(self) -> None:
        """Our end closed: the relay ends once the server's copy is gone too."""
        self.errlog.close()


def _relay(reader: BinaryIO, server: str) -> None:
    with reader:
        while line := reader.readline(MAX_LINE):
            text = line.decode(errors="replace").rstrip()
            if text:
                log.info("MCP server %r: %s", server, text)
