"""Reading what the user hands the API commands: YAML files and JSON arguments.

Mistakes here are the user's to fix, so they become one `InputError` line naming the
file or flag and what is wrong, never a traceback from the YAML or pydantic parser.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError


class InputError(Exception):
    """A file or argument the user gave cannot be used as it is."""


def yaml_document(path: str) -> Any:
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise InputError(f"{path}: {exc.strerror or exc}") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise InputError(f"{path}: not valid YAML: {' '.join(str(exc).split())}") from None


def json_object(flag: str, text: str | None) -> dict[str, Any]:
    """The JSON object given to `flag` (empty when the flag was not given)."""
    if text is None:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"{flag}: not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise InputError(f'{flag}: must be a JSON object, like \'{{"key": "value"}}\'')
    return value


def validation_summary(exc: ValidationError) -> str:
    """Pydantic's errors as one line: `field.path: message; …`."""
    return "; ".join(
        f"{'.'.join(str(part) for part in error['loc']) or 'document'}: {error['msg']}"
        for error in exc.errors(include_url=False, include_input=False)
    )
