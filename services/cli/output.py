"""How API commands print: aligned tables for people, JSON for scripts.

Plain text on purpose: what a person reads and what a test asserts are the same
characters, with no terminal styling to strip. `--json` prints the API's own bodies
(the contract models), so scripts depend on the documented API shape, not on ours.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel


def as_json(value: Any) -> Any:
    """The JSON-ready form of `value`, models anywhere inside it dumped as the API sends them."""
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, dict):
        return {key: as_json(item) for key, item in value.items()}
    if isinstance(value, list):
        return [as_json(item) for item in value]
    return value


def print_json(value: Any, *, lines: bool = False) -> None:
    """Indented JSON, or one compact line (`lines`) for streams of records."""
    data = as_json(value)
    print(json.dumps(data) if lines else json.dumps(data, indent=2), flush=True)


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Columns padded to their widest cell; `None` shows as `-`."""
    cells = [[str(h).upper() for h in headers]]
    cells += [["-" if value is None else str(value) for value in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in cells
    )


def short(value: Any, width: int = 60) -> str:
    """One line of at most `width` characters: text as is, anything else as compact JSON."""
    if value is None:
        return ""
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"
