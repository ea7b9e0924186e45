"""What a failed model call tells the operator: the provider's message, and nothing of
the worker's insides.

LiteLLM appends a Python traceback to some errors (a connection error without a status,
an exception it did not map), with the file paths of the worker's installation, and
sometimes a bug-report link; it also repeats the error's class name. A run's `error` is
read by the project's users, so it keeps the first line of what the provider said and
drops the rest.
"""

from __future__ import annotations

import re

_TRACEBACK = "Traceback (most recent call last):"
_ADDRESS = re.compile(r"<([\w.]+) object at 0x[0-9a-f]+>")
_REPEATED_CLASS = re.compile(r"^(?:litellm\.)?(\w+): (?:\1: )?")
_HANDLE_WITH = re.compile(r"\s*Handle with `litellm\.\w+`\.?")
MAX_CHARS = 2000


def provider_message(exc: BaseException) -> str:
    """`Class: message`, the message cut before any traceback or appended notice."""
    text = str(exc)
    cut = text.find(_TRACEBACK)
    if cut >= 0:
        text = text[:cut]
    text = text.strip().split("\n\n", 1)[0]
    text = " ".join(line.strip() for line in text.splitlines() if line.strip())
    text = _HANDLE_WITH.sub("", _ADDRESS.sub(r"<\1>", text))
    text = _REPEATED_CLASS.sub("", text, count=1)
    name = type(exc).__name__
    return f"{name}: {text}"[:MAX_CHARS] if text else name
