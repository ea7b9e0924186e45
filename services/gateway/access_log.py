"""One log line per answered request: method, path, status and time taken.

Written from the application rather than by hypercorn, so the line carries the request
id and run id like every other line of the request, and passes the same redaction (a
key pasted into a query string is scrubbed, not archived).
"""

from __future__ import annotations

import logging
import time

from quart import Quart, Response, g, request

log = logging.getLogger("ferrumdeck.access")


def install(app: Quart) -> None:
    @app.before_request
    async def _start() -> None:
        g.access_started = time.perf_counter()

    @app.after_request
    async def _log(response: Response) -> Response:
        started: float | None = g.get("access_started")
        elapsed_ms = (time.perf_counter() - started) * 1000 if started is not None else 0.0
        log.info(
            "%s %s %d %.1fms",
            request.method,
            request.full_path.rstrip("?"),
            response.status_code,
            elapsed_ms,
        )
        return response
