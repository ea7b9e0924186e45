"""The API's errors, each rendered as `{"error": {"code", "message"}}`.

```
ApiError
├── BadRequest (400)          bad cursor, bad id, invalid field combination
├── Unauthorized (401)        missing, unknown or revoked key; wrong kind of key
├── Forbidden (403)           the key's role may not do this (in its own project)
├── NotFound (404)            no such agent / run
├── Conflict (409)            state forbids the action: stale epoch, terminal run, …
├── TooManyRequests (429)     too many failed authentications from one client
└── UnprocessableEntity (422) well-formed but refers to what does not exist (unknown agent, model)
```

Validation errors from quart-schema and werkzeug's HTTP errors (bad JSON, 413, 405, …) are
turned into the same body by `register_error_handlers`, so a client has one shape to parse.
"""

from __future__ import annotations

import logging
from typing import Any

from pydantic import ValidationError
from quart import Quart, Request, Response, jsonify
from quart_schema import RequestSchemaValidationError
from werkzeug.exceptions import BadRequest as WerkzeugBadRequest
from werkzeug.exceptions import HTTPException

log = logging.getLogger(__name__)


class ApiError(Exception):
    status = 500
    code = "internal_error"

    def __init__(self, message: str, *, code: str | None = None, details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details
        if code is not None:
            self.code = code


class BadRequest(ApiError):
    status = 400
    code = "bad_request"


class Unauthorized(ApiError):
    status = 401
    code = "unauthorized"


class Forbidden(ApiError):
    status = 403
    code = "forbidden"


class NotFound(ApiError):
    status = 404
    code = "not_found"


class Conflict(ApiError):
    status = 409
    code = "conflict"


class TooManyRequests(ApiError):
    status = 429
    code = "too_many_requests"

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message, details={"retry_after": retry_after})
        self.retry_after = retry_after


class UnprocessableEntity(ApiError):
    status = 422
    code = "unprocessable_entity"


class JsonRequest(Request):
    """A request whose malformed JSON body says what is wrong with it."""

    async def get_json(self, force: bool = False, silent: bool = False, cache: bool = True) -> Any:
        try:
            return await super().get_json(force=force, silent=silent, cache=cache)
        except RecursionError:
            raise WerkzeugBadRequest("request body is not valid JSON: nested too deeply") from None
        except UnicodeDecodeError as exc:
            raise WerkzeugBadRequest(f"request body is not valid JSON: not UTF-8 ({exc})") from None

    def on_json_loading_failed(self, error: Exception) -> Any:
        raise WerkzeugBadRequest(f"request body is not valid JSON: {error}")


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


def register_error_handlers(app: Quart) -> None:
    app.request_class = JsonRequest

    @app.errorhandler(ApiError)
    async def _api_error(exc: ApiError) -> Response:
        response = error_response(exc.status, exc.code, exc.message, exc.details)
        if isinstance(exc, TooManyRequests):
            response.headers["Retry-After"] = str(exc.retry_after)
        return response

    @app.errorhandler(RequestSchemaValidationError)
    async def _schema_error(exc: RequestSchemaValidationError) -> Response:
        message, details = _validation_details(exc)
        return error_response(400, "validation_error", message, details)

    @app.errorhandler(HTTPException)
    async def _http_error(exc: HTTPException) -> Response:
        status = exc.code or 500
        code = (exc.name or "error").lower().replace(" ", "_")
        message = exc.description or exc.name or "error"
        if status == 400 and message.startswith("request body is not valid JSON"):
            code = "invalid_json"
        return error_response(status, code, message)

    @app.errorhandler(Exception)
    async def _unexpected(exc: Exception) -> Response:
        log.exception("unhandled error", exc_info=exc)
        return error_response(500, "internal_error", "internal error; see the gateway log")
