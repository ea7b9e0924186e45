"""What a request must be before any route reads it: JSON that is JSON text, said to be
JSON (`Content-Type: application/json`, else 415 naming the header), and no NUL.

Python's parser is more lenient than JSON: it takes `NaN` and `Infinity`, and `\\ud800`
escapes that decode to lone surrogates, which are not Unicode text. Each passed
validation and then failed where the value went next (PostgreSQL's jsonb, a UTF-8
encoder, another client's parser) as a 500. NUL is valid JSON but PostgreSQL stores it in
neither text nor jsonb, and in a path it reached a query. All are refused here, by name.

The byte searches keep the common case cheap: only a body that may hold one of these (a
`\\u` escape, or the words NaN / Infinity) is walked.
"""

from __future__ import annotations

import json
import math
from typing import Any

from quart import Quart, Request, request

from services.contract.errors import ErrorCode
from services.gateway.errors import BadRequest, UnsupportedMediaType

_INVALID = "request body is not valid JSON: "
NUL_MESSAGE = "request body holds a NUL character (\\u0000), which text cannot store"
_SURROGATE_MESSAGE = (
    _INVALID + "a string holds a lone surrogate (an unpaired "
    "\\ud800-\\udfff escape), which is not Unicode text"
)
_NON_FINITE_MESSAGE = _INVALID + "NaN and Infinity are not JSON numbers"
_NOT_JSON = "this endpoint takes a JSON body: send 'Content-Type: application/json' (got: {})"


def _string_refusal(text: str) -> tuple[ErrorCode, str] | None:
    if "\x00" in text:
        return ErrorCode.NUL_CHARACTER, NUL_MESSAGE
    if not text.isascii():
        try:
            text.encode()
        except UnicodeEncodeError:
            return ErrorCode.INVALID_JSON, _SURROGATE_MESSAGE
    return None


def refusal(value: Any) -> tuple[ErrorCode, str] | None:
    """The (code, message) a decoded JSON value is refused with, or None; without
    recursion, since the value may be nested as deeply as the parser allowed."""
    todo = [value]
    while todo:
        item = todo.pop()
        if isinstance(item, str):
            found = _string_refusal(item)
            if found is not None:
                return found
        elif isinstance(item, float):
            if not math.isfinite(item):
                return ErrorCode.INVALID_JSON, _NON_FINITE_MESSAGE
        elif isinstance(item, dict):
            todo.extend(item.keys())
            todo.extend(item.values())
        elif isinstance(item, list):
            todo.extend(item)
    return None


def decode(body: str | bytes) -> Any:
    """The JSON text `body` as `JsonRequest.get_json` would read it, refused the same way;
    for a route that decodes a large body in a thread instead of on the event loop."""
    try:
        found = json.loads(body)
    except RecursionError:
        raise BadRequest(_INVALID + "nested too deeply", code=ErrorCode.INVALID_JSON) from None
    except UnicodeDecodeError as exc:
        raise BadRequest(_INVALID + f"not UTF-8 ({exc})", code=ErrorCode.INVALID_JSON) from None
    except ValueError as exc:
        raise BadRequest(_INVALID + str(exc), code=ErrorCode.INVALID_JSON) from None
    if _may_need_walking(body):
        found_refusal = refusal(found)
        if found_refusal is not None:
            code, message = found_refusal
            raise BadRequest(message, code=code)
    return found


def _may_need_walking(body: str | bytes) -> bool:
    raw = body if isinstance(body, bytes) else body.encode(errors="replace")
    return b"\\u" in raw or b"NaN" in raw or b"Infinity" in raw


def require_json(sent: Request) -> None:
    """Refuse a body not said to be JSON, naming the header to send (415)."""
    if not sent.is_json:
        raise UnsupportedMediaType(_NOT_JSON.format(sent.content_type or "none"))


class JsonRequest(Request):
    """A request whose body is refused, by name, when it is not JSON text."""

    async def get_json(self, force: bool = False, silent: bool = False, cache: bool = True) -> Any:
        if not (force or silent):
            # Else quart reads no body and the route says only "Input should be a valid
            # dictionary", which points nowhere near the missing header.
            require_json(self)
        try:
            found = await super().get_json(force=force, silent=silent, cache=cache)
        except RecursionError:
            raise BadRequest(_INVALID + "nested too deeply", code=ErrorCode.INVALID_JSON) from None
        except UnicodeDecodeError as exc:
            raise BadRequest(_INVALID + f"not UTF-8 ({exc})", code=ErrorCode.INVALID_JSON) from None
        if _may_need_walking(await self.get_data(cache=True)):
            found_refusal = refusal(found)
            if found_refusal is not None:
                code, message = found_refusal
                raise BadRequest(message, code=code)
        return found

    def on_json_loading_failed(self, error: Exception) -> Any:
        raise BadRequest(_INVALID + str(error), code=ErrorCode.INVALID_JSON)


def install(app: Quart) -> None:
    app.request_class = JsonRequest

    @app.before_request
    async def _no_nul_in_the_address() -> None:
        if "\x00" in request.path or any(
            "\x00" in key or "\x00" in value for key, value in request.args.items(multi=True)
        ):
            raise BadRequest(
                "the request path or query holds a NUL character (%00)",
                code=ErrorCode.NUL_CHARACTER,
            )
