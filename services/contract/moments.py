"""A moment as a query string gives it: an ISO 8601 date-time, as the OpenAPI document
says (`format: date-time`), and nothing else.

pydantic also reads a number as seconds since 1970, so `?since=0.0` or `?until=-63312`
passed as 1970 or 1969: a typo or a unit mix-up answered with a window nobody asked for,
and input the document calls invalid accepted. Refused here, saying what to send.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated

from pydantic import AwareDatetime, BeforeValidator

_NUMBER = re.compile(r"\s*[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\s*")


def _iso_8601_only(value: object) -> object:
    if isinstance(value, int | float) or (isinstance(value, str) and _NUMBER.fullmatch(value)):
        raise ValueError("expected an ISO 8601 date-time like 2026-01-31T12:00:00Z, not a number")
    return value


Moment = Annotated[datetime, BeforeValidator(_iso_8601_only)]
AwareMoment = Annotated[AwareDatetime, BeforeValidator(_iso_8601_only)]
