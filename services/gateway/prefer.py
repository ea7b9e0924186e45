"""The `Prefer` request header (RFC 7240), for the one preference the API honours: `wait`.

Preferences are hints: a malformed one, or one the server does not know, is ignored
rather than refused (RFC 7240 §2), and a wait longer than the server allows is cut to
what it allows. What was applied goes back in `Preference-Applied`.
"""

from __future__ import annotations

_MAX_HEADER = 1000


def preferred_wait(header: str | None) -> int | None:
    """Seconds the client is willing to wait (`wait=N`), or None if it did not ask."""
    if header is None or len(header) > _MAX_HEADER:
        return None
    for preference in header.split(","):
        token, _, value = preference.split(";")[0].partition("=")
        if token.strip().lower() != "wait":
            continue
        value = value.strip().strip('"')
        if value.isascii() and value.isdigit():
            return int(value)
        return None
    return None
