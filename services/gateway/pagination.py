"""Opaque cursors for keyset pagination.

A cursor is the sort key of the last item on the previous page, base64url-encoded so
clients treat it as opaque and we stay free to change what is inside.
"""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

from services.contract.errors import ErrorCode
from services.gateway.errors import BadRequest

T = TypeVar("T")
K = TypeVar("K", str, int, uuid.UUID)


def encode_cursor(key: list[Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(key).encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None, kind: type[K]) -> K | None:
    """The sort key of the last item seen, checked to be of the kind this list sorts by."""
    if cursor is None:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        key = json.loads(raw)
    except (binascii.Error, ValueError):
        raise _foreign() from None
    if not isinstance(key, list) or len(key) != 1:
        raise _foreign()
    value = key[0]
    if kind is uuid.UUID and isinstance(value, str):
        try:
            return kind(value)
        except ValueError:
            raise _foreign() from None
    if not isinstance(value, kind) or isinstance(value, bool):
        raise _foreign()
    return value


def _foreign() -> BadRequest:
    return BadRequest("cursor is not one this API issued", code=ErrorCode.INVALID_CURSOR)


def paginate(
    items: list[T], limit: int, key: Callable[[T], list[Any]]
) -> tuple[list[T], str | None]:
    """Trim a `limit + 1` fetch to `limit` items and the cursor to the next page, if any."""
    if len(items) <= limit:
        return items, None
    page = items[:limit]
    return page, encode_cursor(key(page[-1]))
