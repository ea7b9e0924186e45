"""Time-ordered run identifiers.

UUIDv7 keeps new rows at the right-hand edge of the primary-key index and lets run lists
page by id alone, newest first, without a separate timestamp column in the cursor.
"""

from __future__ import annotations

import os
import time
import uuid
from datetime import datetime


def uuid7() -> uuid.UUID:
    """A UUIDv7 (RFC 9562): 48-bit Unix milliseconds, then 74 random bits."""
    millis = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    value = (millis & ((1 << 48) - 1)) << 80
    value |= 0x7 << 76
    value |= ((rand >> 62) & 0xFFF) << 64
    value |= 0b10 << 62
    value |= rand & ((1 << 62) - 1)
    return uuid.UUID(int=value)


def first_uuid7_at(moment: datetime) -> uuid.UUID:
    """The smallest UUIDv7 of `moment`'s millisecond: every id made then or later sorts at
    or after it, so a time window over ids is a range scan of their index."""
    millis = int(moment.timestamp() * 1000)
    return uuid.UUID(int=((millis & ((1 << 48) - 1)) << 80) | (0x7 << 76) | (0b10 << 62))
