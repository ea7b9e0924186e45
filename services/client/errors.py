"""Everything the client raises, so callers catch one family and never a transport type.

```
FerrumDeckError
├── ConfigError                 no gateway URL or API key could be found
├── GatewayUnavailable          connection refused, reset, timed out: try again later
└── ApiError(status, code, message, details)   the gateway answered with an error body
    ├── BadRequest (400)            bad cursor, invalid field
    ├── Unauthorized (401)          missing, unknown or revoked key
    ├── Forbidden (403)             the key's role may not do this
    ├── NotFound (404)              no such run, approval, agent…
    ├── Conflict (409)              state forbids it: decided approval, finished run…
    ├── UnprocessableEntity (422)   well-formed but names what does not exist
    ├── TooManyRequests (429)       `details["retry_after"]` says when to try again
    └── ServerError (5xx)           503 while the gateway's database or Redis is away: the
                                    same `retry_after`; anything else is a gateway bug
```

The classes are named as the gateway's own (`services.gateway.errors`); `code` is one of
the contract's `ErrorCode` values (a plain string, so a newer gateway's code still
arrives), e.g. `exc.code == ErrorCode.STALE_EPOCH`.
"""

from __future__ import annotations

from typing import Any

import httpx


class FerrumDeckError(Exception):
    """Base of every error this client raises."""


class ConfigError(FerrumDeckError):
    pass


class GatewayUnavailable(FerrumDeckError):
    pass


class ApiError(FerrumDeckError):
    def __init__(self, status: int, code: str, message: str, details: Any = None) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.details = details


class BadRequest(ApiError):
    pass


class Unauthorized(ApiError):
    pass


class Forbidden(ApiError):
    pass


class NotFound(ApiError):
    pass


class Conflict(ApiError):
    pass


class UnprocessableEntity(ApiError):
    pass


class TooManyRequests(ApiError):
    pass


class ServerError(ApiError):
    pass


_BY_STATUS: dict[int, type[ApiError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    422: UnprocessableEntity,
    429: TooManyRequests,
}


def error_from_response(response: httpx.Response) -> ApiError:
    """The typed error for a non-2xx answer, from the API's `{"error": {...}}` body."""
    code, message, details = "error", response.reason_phrase or "error", None
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        error = body["error"]
        code = str(error.get("code", code))
        message = str(error.get("message", message))
        details = error.get("details")
    kind = _BY_STATUS.get(response.status_code)
    if kind is None:
        kind = ServerError if response.status_code >= 500 else ApiError
    return kind(response.status_code, code, message, details)
