"""The API's errors, each rendered as `{"error": {"code", "message"}}`.

```
ApiError
├── BadRequest (400)          bad cursor, bad id, invalid field combination
├── Unauthorized (401)        missing, unknown or revoked key; wrong kind of key
├── Forbidden (403)           the key's role may not do this (in its own project)
├── NotFound (404)            no such agent / run
├── Conflict (409)            state forbids the action: stale epoch, terminal run, …
├── ContentTooLarge (413)     a body within the global limit, past a route's own (a policy)
├── UnsupportedMediaType (415) a body not sent as `Content-Type: application/json`
├── TooManyRequests (429)     too many failed authentications, or a backlog past its bound
├── UnprocessableEntity (422) well-formed but refers to what does not exist (unknown agent,
│                             model), or past a bound (too many rules)
└── ServiceUnavailable (503)  PostgreSQL or Redis cannot be reached now
```

Validation errors from quart-schema and werkzeug's HTTP errors (413, 405, …) are
turned into the same body by `register_error_handlers`, so a client has one shape to parse.
So is a request that failed because PostgreSQL (or Redis) is away, whichever query or
route it was in: `503 database_unavailable` (or `redis_unavailable`) with `Retry-After`,
never a 500, and never a 401 because the key could not be looked up. 429 and 503 carry
`Retry-After`, which well-behaved clients wait for.
"""

from __future__ import annotations

import logging
import re
import uuid
from typing import Any

from pydantic import ValidationError
from quart import Quart, Response, current_app, jsonify, request
from quart_schema import RequestSchemaValidationError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from werkzeug.exceptions import HTTPException
from werkzeug.routing import Map, Rule

from services.contract.errors import ErrorCode
from services.gateway.db import connections

log = logging.getLogger(__name__)


# Long enough for a restarting server to come back, short enough not to idle clients.
OUTAGE_RETRY_AFTER_SECONDS = 5

_RELAXED = "ferrumdeck_relaxed_ids"
_UUID_ARGUMENT = re.compile(r"<uuid:([^>]+)>")
_EXAMPLE_ID = "0190f6c8-2b51-7c4e-9a3d-5f1e8b2c4a7d"


class ApiError(Exception):
    status = 500
    code: ErrorCode = ErrorCode.INTERNAL_ERROR
    retry_after: int | None = None

    def __init__(self, message: str, *, code: ErrorCode | None = None, details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details
        if code is not None:
            self.code = code


class BadRequest(ApiError):
    status = 400
    code: ErrorCode = ErrorCode.BAD_REQUEST


class Unauthorized(ApiError):
    status = 401
    code: ErrorCode = ErrorCode.UNAUTHORIZED


class Forbidden(ApiError):
    status = 403
    code: ErrorCode = ErrorCode.FORBIDDEN


class NotFound(ApiError):
    status = 404
    code: ErrorCode = ErrorCode.NOT_FOUND


class Conflict(ApiError):
    status = 409
    code: ErrorCode = ErrorCode.CONFLICT


class ContentTooLarge(ApiError):
    status = 413
    code: ErrorCode = ErrorCode.POLICY_TOO_LARGE


class UnsupportedMediaType(ApiError):
    status = 415
    code: ErrorCode = ErrorCode.UNSUPPORTED_MEDIA_TYPE


class TooManyRequests(ApiError):
    status = 429
    code: ErrorCode = ErrorCode.TOO_MANY_REQUESTS

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message, details={"retry_after": retry_after})
        self.retry_after = retry_after


class UnprocessableEntity(ApiError):
    status = 422
    code: ErrorCode = ErrorCode.UNPROCESSABLE_ENTITY


class ServiceUnavailable(ApiError):
    status = 503
    code: ErrorCode = ErrorCode.SERVICE_UNAVAILABLE

    def __init__(self, message: str, *, code: ErrorCode, retry_after: int) -> None:
        super().__init__(message, code=code, details={"retry_after": retry_after})
        self.retry_after = retry_after


def outage(exc: BaseException) -> ServiceUnavailable | None:
    """The 503 for an error that only says a backing server is away, else None."""
    if connections.unreachable(exc):
        return ServiceUnavailable(
            "the database cannot be reached; retry shortly",
            code=ErrorCode.DATABASE_UNAVAILABLE,
            retry_after=OUTAGE_RETRY_AFTER_SECONDS,
        )
    if isinstance(exc, RedisConnectionError | RedisTimeoutError):
        return ServiceUnavailable(
            "Redis cannot be reached; retry shortly",
            code=ErrorCode.REDIS_UNAVAILABLE,
            retry_after=OUTAGE_RETRY_AFTER_SECONDS,
        )
    return None


def error_response(status: int, code: str, message: str, details: Any = None) -> Response:
    body: dict[str, Any] = {"code": code, "message": message}
    if details is not None:
        body["details"] = details
    response = jsonify({"error": body})
    response.status_code = status
    if status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="ferrumdeck"'
    return response


def _validation_details(exc: RequestSchemaValidationError) -> tuple[str, Any]:
    cause = exc.validation_error
    if isinstance(cause, ValidationError):
        details = [
            {"field": ".".join(str(part) for part in err["loc"]) or "(body)", "message": err["msg"]}
            for err in cause.errors(include_url=False, include_input=False)
        ]
        summary = "; ".join(f"{d['field']}: {d['message']}" for d in details[:5])
        return f"invalid request: {summary}", details
    return f"invalid request: {cause}", None


def _http_message(exc: HTTPException, status: int) -> str:
    """werkzeug's wording, except where it leaves out what the caller needs to fix it."""
    if status == 413:
        limit = current_app.config.get("MAX_CONTENT_LENGTH")
        return f"the request body is larger than this gateway accepts ({limit} bytes)"
    if status == 404:
        return _malformed_id() or (
            f"no such endpoint: {request.method} {request.path} (see /openapi.json)"
        )
    return exc.description or exc.name or "error"


def _malformed_id() -> str | None:
    """What is wrong with a path that would reach a route but for an id that is not a
    UUID (`/v1/runs/nope`): the route's `<uuid:…>` did not match, so routing found none."""
    relaxed: Map | None = current_app.extensions.get(_RELAXED)
    if relaxed is None:
        relaxed = current_app.extensions[_RELAXED] = _relaxed_map(current_app.url_map)
    try:
        _, arguments = relaxed.bind("").match(request.path, method=request.method)
    except HTTPException:
        return None
    for name, value in arguments.items():
        try:
            uuid.UUID(value)
        except ValueError:
            noun = name.removesuffix("_id")
            return f"no {noun} {value!r}: a {noun} id is a UUID, like {_EXAMPLE_ID}"
    return None


def _relaxed_map(url_map: Map) -> Map:
    """The rules with an id, each id matching any path segment: to tell a malformed id
    from an endpoint that does not exist."""
    rules = [
        Rule(_UUID_ARGUMENT.sub(r"<\1>", rule.rule), endpoint=rule.endpoint, methods=rule.methods)
        for rule in url_map.iter_rules()
        if _UUID_ARGUMENT.search(rule.rule)
    ]
    return Map(rules, strict_slashes=url_map.strict_slashes, merge_slashes=url_map.merge_slashes)


def register_error_handlers(app: Quart) -> None:
    @app.errorhandler(ApiError)
    async def _api_error(exc: ApiError) -> Response:
        response = error_response(exc.status, exc.code, exc.message, exc.details)
        if exc.retry_after is not None:
            response.headers["Retry-After"] = str(exc.retry_after)
        return response

    @app.errorhandler(RequestSchemaValidationError)
    async def _schema_error(exc: RequestSchemaValidationError) -> Response:
        message, details = _validation_details(exc)
        return error_response(400, ErrorCode.VALIDATION_ERROR, message, details)

    @app.errorhandler(HTTPException)
    async def _http_error(exc: HTTPException) -> Response:
        status = exc.code or 500
        code = (exc.name or "error").lower().replace(" ", "_")
        response = error_response(status, code, _http_message(exc, status))
        if status == 405:  # the methods the path does take
            response.headers["Allow"] = ", ".join(getattr(exc, "valid_methods", None) or ())
        return response

    @app.errorhandler(Exception)
    async def _unexpected(exc: Exception) -> Response:
        unavailable = outage(exc)
        if unavailable is not None:
            log.warning("answering 503 %s: %s", unavailable.code, exc or type(exc).__name__)
            return await _api_error(unavailable)
        log.exception("unhandled error", exc_info=exc)
        return error_response(500, ErrorCode.INTERNAL_ERROR, "internal error; see the gateway log")
