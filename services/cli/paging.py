"""`--limit` and `--cursor` of the list commands: as many items as asked, a page of the
API at a time, and the cursor to carry on from.

The API caps a page at 200; the commands do not, so `--limit 1000` fetches five pages,
and `--cursor` (printed after a listing that stopped short) reaches everything older.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Protocol, TypeVar

T = TypeVar("T")

API_PAGE = 200


class Page(Protocol[T]):
    @property
    def items(self) -> list[T]: ...

    @property
    def next_cursor(self) -> str | None: ...


def positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def add_options(listing: argparse.ArgumentParser, what: str) -> None:
    listing.add_argument(
        "--limit", type=positive, default=50, help=f"how many {what} (pages through the API)"
    )
    listing.add_argument("--cursor", help=f"carry on where an earlier listing of {what} stopped")


def collect(
    fetch: Callable[[int, str | None], Page[T]], limit: int, cursor: str | None
) -> tuple[list[T], str | None]:
    """Up to `limit` items from `cursor` on, and the cursor of what comes after them."""
    items: list[T] = []
    while len(items) < limit:
        page = fetch(min(API_PAGE, limit - len(items)), cursor)
        items.extend(page.items)
        cursor = page.next_cursor
        if cursor is None:
            break
    return items, cursor


def more(what: str, cursor: str | None) -> str | None:
    """The line that says how to list the rest, if there is a rest."""
    return None if cursor is None else f"(more {what}: --cursor {cursor})"
