"""Which request, and which run, every log line of a request is about.

The request id comes from the caller's `X-Request-Id` (a proxy's or an integration's, so
their logs and ours join up) when it is sane, else a fresh one; it is echoed in the
response either way. Routes with a `run_id` put it on their lines too.
"""

from __future__ import annotations

import re
import uuid

from quart import Quart, Response, request

from services.telemetry import logs

HEADER = "X-Request-Id"
# A bounded token: it is copied into every log line and audit event of the request.
_SANE = re.compile(r"^[A-Za-z0-9._-]{1,128}$")


def install(app: Quart) -> None:
    @app.before_request
    async def _bind() -> None:
        given = request.headers.get(HEADER, "")
        logs.request_id.set(given if _SANE.match(given) else uuid.uuid4().hex)
        run = (request.view_args or {}).get("run_id")
        logs.run_id.set(str(run) if run is not None else None)

    @app.after_request
    async def _echo(response: Response) -> Response:
        request_id = logs.request_id.get()
        if request_id is not None:
            response.headers[HEADER] = request_id
        return response
