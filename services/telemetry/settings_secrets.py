"""Which settings are secrets, so they can be masked when shown and scrubbed from logs.

A field is secret by its name (token, key, password, secret); a URL's password is secret
whatever the field. Naming is the rule so a new `*_token` setting is covered without
anyone remembering to list it.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

from pydantic_settings import BaseSettings

MASK = "********"
_SECRET_NAME = re.compile(r"token|key|password|passwd|secret", re.IGNORECASE)


def is_secret(field: str) -> bool:
    return bool(_SECRET_NAME.search(field))


def _url_password(value: str) -> str | None:
    try:
        return urlsplit(value).password if "://" in value else None
    except ValueError:
        return None


def secrets_of(settings: BaseSettings) -> list[str]:
    """The secret values these settings hold: secret fields and passwords inside URLs."""
    found = []
    for field, value in settings.model_dump().items():
        if not isinstance(value, str) or not value:
            continue
        if is_secret(field):
            found.append(value)
        elif (password := _url_password(value)) is not None:
            found.append(password)
    return found


def _shown(field: str, value: Any) -> str:
    if value is None:
        return ""
    text = str(value)
    if is_secret(field):
        return MASK if text else ""
    password = _url_password(text)
    if password:
        return text.replace(f":{password}@", f":{MASK}@", 1)
    return text


def masked(settings: BaseSettings) -> dict[str, str]:
    """Every setting as its environment variable, secrets masked."""
    prefix = str(settings.model_config.get("env_prefix", ""))
    return {
        f"{prefix}{field}".upper(): _shown(field, value)
        for field, value in sorted(settings.model_dump().items())
    }
